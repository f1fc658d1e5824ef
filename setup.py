"""Builds the one compiled module, consumer/wire/fastpath.py (see its docstring); everything else is in
pyproject.toml. The build is optional: without a C compiler the module runs interpreted."""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize

    extensions = cythonize(
        [Extension("consumer.wire.fastpath", ["consumer/wire/fastpath.py"], optional=True)],
        compiler_directives={"language_level": 3, "annotation_typing": False, "wraparound": False},
        quiet=True,
    )
except ImportError:
    extensions = []

setup(ext_modules=extensions)
