"""Offline stand-ins for the repositories Bazel 4.2.3 would otherwise download.

Debian's bazel-bootstrap resolves `@rules_cc`, `@rules_java` and `@remote_coverage_tools` from
the network unless the root WORKSPACE defines them. `etsmgr_dependencies()` defines small
generated repositories for each one that is not defined yet, so both this workspace and any
workspace that depends on etsmgr build with no network:

    local_repository(name = "etsmgr", path = "...")
    load("@etsmgr//:repositories.bzl", "etsmgr_dependencies")
    etsmgr_dependencies()

System libraries (Abseil, GoogleTest, Benchmark, liburing) are not repositories: they are
`cc_library` targets in `//third_party/sys` that link Debian's -dev packages.
"""

def _forwarders(names):
    return "".join([
        "def {0}(**kwargs):\n    native.{0}(**kwargs)\n\n".format(name)
        for name in names
    ])

_RULES_CC_DEFS = _forwarders([
    "cc_binary",
    "cc_import",
    "cc_library",
    "cc_proto_library",
    "cc_test",
    "cc_toolchain",
    "cc_toolchain_suite",
    "objc_library",
])

_RULES_JAVA_DEFS = _forwarders([
    "java_binary",
    "java_import",
    "java_library",
    "java_plugin",
    "java_proto_library",
    "java_runtime",
    "java_test",
    "java_toolchain",
])

_COVERAGE_BUILD = """
package(default_visibility = ["//visibility:public"])

filegroup(
    name = "coverage_report_generator",
    srcs = [],
)

sh_binary(
    name = "lcov_merger",
    srcs = ["lcov_merger.sh"],
)
"""

# Bazel's collect_cc_coverage.sh leaves gcc's `*.gcov.json.gz` files in --coverage_dir; this
# merges them into one lcov tracefile at --output_file, leaving out the sources that match a
# --filter_sources regex (system headers, external repositories). The python is inlined in the shell script
# so that nothing has to be found in runfiles.
_LCOV_MERGER_PY = """
import glob, gzip, json, os, re, sys

def main(argv):
    coverage_dir, output, excludes = ".", None, []
    for arg in argv:
        if arg.startswith("--coverage_dir="):
            coverage_dir = arg.split("=", 1)[1]
        elif arg.startswith("--output_file="):
            output = arg.split("=", 1)[1]
        elif arg.startswith("--filter_sources="):
            excludes.append(re.compile(arg.split("=", 1)[1]))
    lines = {}
    for path in glob.glob(os.path.join(coverage_dir, "**", "*.gcov.json.gz"), recursive=True):
        with gzip.open(path, "rt") as f:
            data = json.load(f)
        for entry in data.get("files", []):
            name = entry["file"]
            if any(rx.match(name) for rx in excludes):
                continue
            counts = lines.setdefault(name, {})
            for line in entry.get("lines", []):
                n = line["line_number"]
                counts[n] = counts.get(n, 0) + line["count"]
    with open(output, "w") as out:
        for name in sorted(lines):
            counts = lines[name]
            out.write("SF:%s\\n" % name)
            for n in sorted(counts):
                out.write("DA:%d,%d\\n" % (n, counts[n]))
            out.write("LH:%d\\nLF:%d\\nend_of_record\\n" % (
                sum(1 for c in counts.values() if c > 0), len(counts)))
    return 0

sys.exit(main(sys.argv[1:]))
"""

def _stub_repo_impl(ctx):
    ctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % ctx.name)
    for path, content in ctx.attr.files.items():
        ctx.file(path, content, executable = path.endswith(".sh"))

_stub_repo = repository_rule(
    implementation = _stub_repo_impl,
    attrs = {"files": attr.string_dict()},
    doc = "A repository made of the given files, so that Bazel need not download it.",
)

def etsmgr_dependencies():
    """Defines the offline stub repositories that are not defined yet."""
    existing = native.existing_rules()
    if "rules_cc" not in existing:
        _stub_repo(
            name = "rules_cc",
            files = {"BUILD": "", "cc/BUILD": "", "cc/defs.bzl": _RULES_CC_DEFS},
        )
    if "rules_java" not in existing:
        _stub_repo(
            name = "rules_java",
            files = {"BUILD": "", "java/BUILD": "", "java/defs.bzl": _RULES_JAVA_DEFS},
        )
    if "remote_coverage_tools" not in existing:
        _stub_repo(
            name = "remote_coverage_tools",
            files = {
                "BUILD": _COVERAGE_BUILD,
                "lcov_merger.sh": "#!/bin/sh\nexec python3 - \"$@\" <<'PY'\n" +
                                  _LCOV_MERGER_PY + "PY\n",
            },
        )
