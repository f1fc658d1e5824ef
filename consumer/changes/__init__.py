"""The changes to the truth after a record was written (issue 22, docs/retractions.md): the change set
every replica mirrors from the change topics and checks the records it admits against, and what a
change retracts."""
