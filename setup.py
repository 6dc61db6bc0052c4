"""The one compiled part: the native audit-chain walk (everything else is in pyproject.toml).

It links the system's SQLite and OpenSSL (Debian: libsqlite3-dev, libssl-dev). It is
optional: without a compiler or those headers the install still succeeds and
``hvelv audit verify`` uses its pure-Python walk (slower, same answers).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hvelv.audit._walk",
            sources=["src/hvelv/audit/_walk.c"],
            libraries=["sqlite3", "crypto"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
