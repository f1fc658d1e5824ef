"""Builds the compiled modules, consumer/wire/fastpath.py and consumer/consents/fingerprints.py (see their
docstrings); everything else is in pyproject.toml. The build is optional: without a C compiler they run interpreted."""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize

    extensions = cythonize(
        [
            Extension("consumer.wire.fastpath", ["consumer/wire/fastpath.py"], optional=True),
            Extension("consumer.consents.fingerprints", ["consumer/consents/fingerprints.py"], optional=True),
        ],
        compiler_directives={"language_level": 3, "annotation_typing": False, "wraparound": False},
        quiet=True,
    )
except ImportError:
    extensions = []

setup(ext_modules=extensions)
