"""Build the C core, percpu._core, from csrc/.

Switches (environment):
  PERCPU_SANITIZE=1  build with -fsanitize=address,undefined (CI runs the unit
                     tests under it, with LD_PRELOAD of libasan)
  PERCPU_DEBUG=1     -O0 -g and the core's self-checks
"""
import glob
import os

from setuptools import Extension, setup

SANITIZE = os.environ.get("PERCPU_SANITIZE", "0") == "1"
DEBUG = os.environ.get("PERCPU_DEBUG", "0") == "1" or SANITIZE

cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Wno-missing-field-initializers", "-fvisibility=hidden"]
ldflags: list[str] = []
if DEBUG:
    cflags += ["-O0", "-g3", "-UNDEBUG", "-DPK_DEBUG=1"]
else:
    cflags += ["-O2"]
if SANITIZE:
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    ldflags += ["-fsanitize=address,undefined"]

setup(
    ext_modules=[
        Extension(
            "percpu._core",
            sources=sorted(glob.glob("csrc/*.c")),
            depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/*.inc")),
            include_dirs=["csrc"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
