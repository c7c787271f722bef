"""Compiler flags and rule wrappers shared by every etsmgr target.

Project code is compiled with warnings as errors; system headers (Abseil, GoogleTest, liburing)
are exempt because they come from /usr/include. Use these wrappers instead of the plain rules so
the flags live in one place.
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library", "cc_test")

ETSMGR_COPTS = [
    # GCC12-WORKAROUND: gcc turns the symmetric transfer at a coroutine's final_suspend into a tail call only with
    # sibling-call optimisation, which -O0/-O1 leave off: without it a long chain of synchronous
    # co_awaits grows the stack until it overflows. Code that awaits etsmgr Tasks in its own
    # coroutines needs the same flag below -O2.
    "-foptimize-sibling-calls",
    "-Wall",
    "-Wextra",
    "-Werror",
    # Option structs are meant to be filled with designated initializers ({.trap_exit = true}).
    "-Wno-missing-field-initializers",
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
