"""What operating the service needs: its settings (`settings`), Prometheus metrics (`metrics`), the
probes (`health`), JSON logs (`logs`) and the Kafka ACLs it needs (`acls`)."""
