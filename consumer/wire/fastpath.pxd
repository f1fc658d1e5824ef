# C types for fastpath.py, used when Cython compiles it (an "augmenting" .pxd: the .py stays plain
# Python). Keep the signatures in step with fastpath.py.
import cython

cdef extern from "Python.h":
    const char* PyBytes_AS_STRING(object)


cdef inline const unsigned char* _bytes_data(bytes buf):
    return <const unsigned char*> PyBytes_AS_STRING(buf)

@cython.locals(raw=cython.ulonglong, shift=cython.int, byte=cython.ulonglong, value=cython.longlong)
cdef tuple _varint(bytes buf, Py_ssize_t pos)

@cython.locals(byte=cython.uchar, size=Py_ssize_t, end=Py_ssize_t)
cdef Py_ssize_t _string_end(bytes buf, Py_ssize_t pos, Py_ssize_t n) except -1

@cython.locals(i=Py_ssize_t, k=Py_ssize_t, need=Py_ssize_t, lead=cython.uchar, second=cython.uchar,
               low=cython.uchar, high=cython.uchar, data="const unsigned char*")
cdef int _check_utf8(bytes buf, Py_ssize_t start, Py_ssize_t end) except -1

@cython.locals(n=Py_ssize_t, pos=Py_ssize_t, id_end=Py_ssize_t, start=Py_ssize_t, branch=cython.uchar,
               symbol=cython.uchar, language_start=Py_ssize_t, language_end=Py_ssize_t, content_end=Py_ssize_t,
               split=Py_ssize_t, public=cython.bint)
cdef tuple _decode(bytes buf, int first_enum, int second_enum, int strings)

cpdef tuple decode_post(bytes buf)
cpdef tuple decode_ai_interaction(bytes buf)

@cython.locals(raw=cython.ulonglong, out=bytearray)
cpdef bytes zigzag_varint(long long value)

cpdef bytes training_record(bytes header, bytes buf, Py_ssize_t id_end,
                            Py_ssize_t language_start, Py_ssize_t language_end, Py_ssize_t split,
                            Py_ssize_t content_end, bytes country, bytes pseudonym, bytes provenance,
                            long long offset)

cpdef bytes training_record_of(bytes header, bytes buf, tuple fields, bytes country, bytes pseudonym,
                               bytes provenance, long long offset)
