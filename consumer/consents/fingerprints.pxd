# C types for fingerprints.py, used when Cython compiles it (an "augmenting" .pxd: the .py stays plain
# Python). Keep the signatures in step with fingerprints.py.
import cython

@cython.locals(i=Py_ssize_t, word=cython.ulonglong, value=cython.ulonglong)
cdef Py_ssize_t _find(unsigned long long[::1] slots, Py_ssize_t mask, Py_ssize_t home, unsigned long long remainder)

@cython.locals(i=Py_ssize_t, word=cython.ulonglong, value=cython.ulonglong)
cdef int _insert(unsigned long long[::1] slots, Py_ssize_t mask, Py_ssize_t home, unsigned long long remainder)

@cython.locals(hole=Py_ssize_t, j=Py_ssize_t, value=cython.ulonglong, distance=Py_ssize_t)
cdef int _remove(unsigned long long[::1] slots, Py_ssize_t mask, Py_ssize_t home, unsigned long long remainder)

@cython.locals(n=Py_ssize_t, added=Py_ssize_t)
cpdef Py_ssize_t _bulk_insert(unsigned long long[::1] slots, Py_ssize_t mask, int shift,
                              unsigned long long[::1] firsts, unsigned long long[::1] seconds)

@cython.locals(n=Py_ssize_t, found=Py_ssize_t)
cpdef Py_ssize_t _bulk_contains(unsigned long long[::1] slots, Py_ssize_t mask, int shift,
                                unsigned long long[::1] firsts, unsigned long long[::1] seconds)


@cython.locals(i=Py_ssize_t, c=cython.uchar, value=cython.ulonglong)
cdef unsigned long long _hex(bytes pseudonym, Py_ssize_t start, Py_ssize_t count) except? 0

cdef bytes _checked(bytes pseudonym)


@cython.locals(i=Py_ssize_t)
cdef void _zero(unsigned long long[::1] slots)


cdef class ConsentSet:
    cdef public Py_ssize_t capacity
    cdef public Py_ssize_t entries
    cdef public Py_ssize_t refused
    cdef object _slots
    cdef unsigned long long[::1] _view
    cdef Py_ssize_t _mask
    cdef int _shift
