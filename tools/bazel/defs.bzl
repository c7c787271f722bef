"""Compiler flags and rule wrappers shared by every etsmgr target.

Project code is compiled with warnings as errors; system headers (Abseil, GoogleTest, liburing)
are exempt because they come from /usr/include. Use these wrappers instead of the plain rules so
the flags live in one place.
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library", "cc_test")

ETSMGR_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
]

def etsmgr_cc_library(name, copts = [], **kwargs):
    cc_library(name = name, copts = ETSMGR_COPTS + copts, **kwargs)

def etsmgr_cc_binary(name, copts = [], **kwargs):
    cc_binary(name = name, copts = ETSMGR_COPTS + copts, **kwargs)

def etsmgr_cc_test(name, copts = [], deps = [], **kwargs):
    """A gtest test; `deps` need not repeat gtest_main."""
    cc_test(
        name = name,
        copts = ETSMGR_COPTS + copts,
        deps = deps + ["//third_party/sys:gtest_main"],
        **kwargs
    )
