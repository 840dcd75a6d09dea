"""Bad configuration is reported with file, key path and line, all errors at once (CFG-040)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from hazremote.config import load_workspace
from hazremote.errors import ConfigError, Diagnostic
from tests.config.conftest import WriteTree

WS = ".haz/workspace.yml"
APP = "app/haz.yml"


@dataclass(frozen=True)
class Case:
    """One bad input and the single diagnostic it must produce.

    ``line`` is a 1-based line, or a text marker: the line of its first occurrence in ``file``.
    """

    id: str
    files: dict[str, str]
    file: str
    key_path: str
    line: int | str
    message: str


def app(text: str) -> dict[str, str]:
    """A workspace with one explicit project `app` whose haz.yml is ``text``."""
    return {WS: "projects: [app]\n", APP: text}


def ws(text: str) -> dict[str, str]:
    """A workspace with only a workspace.yml."""
    return {WS: text}


def task(body: str) -> dict[str, str]:
    """Project `app` with a task `build` whose body is ``body`` (indented under it)."""
    return app("tasks:\n  build:\n" + textwrap.indent(textwrap.dedent(body), "    "))


CASES = [
    Case(
        id="unknown-task-key-with-suggestion",
        files=task("command: [make]\ndependsOn: [~:x]\n"),
        file=APP,
        key_path="tasks.build.dependsOn",
        line="dependsOn",
        message="unknown key 'dependsOn'; did you mean 'deps'?",
    ),
    Case(
        id="unknown-key-lists-allowed-keys",
        files=task("command: [make]\nweakdeps: [~:x]\n"),
        file=APP,
        key_path="tasks.build.weakdeps",
        line="weakdeps",
        message="did you mean 'weakDeps'? (allowed keys: cache, command, deps, env,",
    ),
    Case(
        id="unknown-workspace-key",
        files=ws("projetcs: [a]\n"),
        file=WS,
        key_path="projetcs",
        line=1,
        message="did you mean 'projects'?",
    ),
    Case(
        id="unknown-env-key",
        files=task("command: [make]\nenv:\n  fromHost: [X]\n"),
        file=APP,
        key_path="tasks.build.env.fromHost",
        line="fromHost",
        message="did you mean 'from_host'?",
    ),
    Case(
        id="command-and-shell",
        files=task("command: [make]\nshell: make\n"),
        file=APP,
        key_path="tasks.build.shell",
        line="shell:",
        message="mutually exclusive",
    ),
    Case(
        id="neither-command-nor-shell",
        files=task("inputs: [src/**]\n"),
        file=APP,
        key_path="tasks.build",
        line="build:",
        message="needs command: (an argv list) or shell: (a script)",
    ),
    Case(
        id="empty-task-body",
        files=app("tasks:\n  build:\n"),
        file=APP,
        key_path="tasks.build",
        line="build:",
        message="needs command:",
    ),
    Case(
        id="command-as-a-string",
        files=task("command: node build.js\n"),
        file=APP,
        key_path="tasks.build.command",
        line="command:",
        message="must be a non-empty list of strings (argv)",
    ),
    Case(
        id="empty-command",
        files=task("command: []\n"),
        file=APP,
        key_path="tasks.build.command",
        line="command:",
        message="must not be empty",
    ),
    Case(
        id="command-item-is-a-mapping",
        files=task("command:\n  - make\n  - {a: b}\n"),
        file=APP,
        key_path="tasks.build.command[1]",
        line="{a: b}",
        message="items must be strings, got a mapping",
    ),
    Case(
        id="shell-mapping-with-two-shells",
        files=task("shell: {bash: a, zsh: b}\n"),
        file=APP,
        key_path="tasks.build.shell",
        line="shell:",
        message="exactly one key",
    ),
    Case(
        id="bad-duration",
        files=task("command: [make]\ntimeout: 10x\n"),
        file=APP,
        key_path="tasks.build.timeout",
        line="timeout",
        message="invalid duration '10x'",
    ),
    Case(
        id="zero-timeout",
        files=task("command: [make]\ntimeout: 0s\n"),
        file=APP,
        key_path="tasks.build.timeout",
        line="timeout",
        message="must be greater than zero",
    ),
    Case(
        id="bad-size",
        files=ws("cache:\n  clean:\n    max_size: 10XB\n"),
        file=WS,
        key_path="cache.clean.max_size",
        line="max_size",
        message="invalid size '10XB'",
    ),
    Case(
        id="bad-max-age",
        files=ws("cache: {clean: {max_age: soon}}\n"),
        file=WS,
        key_path="cache.clean.max_age",
        line=1,
        message="invalid duration 'soon'",
    ),
    Case(
        id="bad-ref-in-deps-1",
        files=task("command: [make]\ndeps:\n  - ~:ok\n  - lib:bad name\n"),
        file=APP,
        key_path="tasks.build.deps[1]",
        line="lib:bad name",
        message="invalid task reference 'lib:bad name'",
    ),
    Case(
        id="bare-task-name-in-weak-deps",
        files=task("command: [make]\nweakDeps: [lint]\n"),
        file=APP,
        key_path="tasks.build.weakDeps[0]",
        line="weakDeps",
        message="write ~:lint",
    ),
    Case(
        id="dotdot-in-inputs",
        files=task("command: [make]\ninputs:\n  - src/**\n  - ../other/x\n"),
        file=APP,
        key_path="tasks.build.inputs[1]",
        line="../other",
        message="'..' segment",
    ),
    Case(
        id="negation-in-outputs",
        files=task("command: [make]\noutputs: ['!dist/keep']\n"),
        file=APP,
        key_path="tasks.build.outputs[0]",
        line="outputs",
        message="'!' exclusions are only allowed in inputs",
    ),
    Case(
        id="inputs-as-a-string",
        files=task("command: [make]\ninputs: src/**\n"),
        file=APP,
        key_path="tasks.build.inputs",
        line="inputs",
        message="inputs must be a list, got the string 'src/**'",
    ),
    Case(
        id="bad-task-name",
        files=app("tasks:\n  -build:\n    command: [make]\n"),
        file=APP,
        key_path="tasks.-build",
        line="-build",
        message="invalid task name: '-build' must start with a letter or digit",
    ),
    Case(
        id="bad-project-tag",
        files=app("tags:\n  - ok\n  - bad tag\n"),
        file=APP,
        key_path="tags[1]",
        line="bad tag",
        message="invalid tag: 'bad tag' contains ' '",
    ),
    Case(
        id="bad-project-name",
        files=app("name: web.app\n"),
        file=APP,
        key_path="name",
        line=1,
        message="invalid project name",
    ),
    Case(
        id="bad-mutex-mode",
        files=task("command: [make]\nmutex: {name: db, mode: sharde}\n"),
        file=APP,
        key_path="tasks.build.mutex.mode",
        line="mutex",
        message=(
            "expected one of exclusive, shared; got the string 'sharde'; did you mean 'shared'?"
        ),
    ),
    Case(
        id="bad-mutex-name",
        files=task("command: [make]\nmutex: '~:my db'\n"),
        file=APP,
        key_path="tasks.build.mutex",
        line="mutex",
        message="invalid mutex name",
    ),
    Case(
        id="cache-as-a-string",
        files=task("command: [make]\ncache: 'yes'\n"),
        file=APP,
        key_path="tasks.build.cache",
        line="cache",
        message="expected true or false, got the string 'yes'",
    ),
    Case(
        id="bad-task-remote-policy",
        files=task("command: [make]\nremote: sometimes\n"),
        file=APP,
        key_path="tasks.build.remote",
        line="remote",
        message="expected one of never, auto, always",
    ),
    Case(
        id="platform-value-is-a-list",
        files=task("command: [make]\nplatform:\n  pool: [a, b]\n"),
        file=APP,
        key_path="tasks.build.platform.pool",
        line="pool",
        message="must be a string, got a list",
    ),
    Case(
        id="bad-env-var-name",
        files=task("command: [make]\nenv:\n  from_host: [NODE-VERSION]\n"),
        file=APP,
        key_path="tasks.build.env.from_host[0]",
        line="NODE-VERSION",
        message="'NODE-VERSION' is not a valid environment variable name",
    ),
    Case(
        id="bad-override-name",
        files=task("command: [make]\nenv:\n  override:\n    1X: a\n"),
        file=APP,
        key_path="tasks.build.env.override.1X",
        line="1X",
        message="not a valid environment variable name",
    ),
    Case(
        id="null-override-value",
        files=task("command: [make]\nenv:\n  override:\n    X:\n"),
        file=APP,
        key_path="tasks.build.env.override.X",
        line="X:",
        message="got null; write '' for an empty value",
    ),
    Case(
        id="var-both-hashed-and-passed-through",
        files=task("command: [make]\nenv:\n  from_host: [HOME]\n  pass_through: [PATH, HOME]\n"),
        file=APP,
        key_path="tasks.build.env.pass_through",
        line="pass_through",
        message="HOME listed in both from_host and pass_through",
    ),
    Case(
        id="duplicate-key",
        files=task("command: [make]\ncommand: [make, all]\n"),
        file=APP,
        key_path="tasks.build.command",
        line="[make, all]",
        message="duplicate key 'command' (first written on line 3)",
    ),
    Case(
        id="malformed-yaml",
        files=app("tasks:\n  build:\n    command: [make, all\n    inputs: [x]\n"),
        file=APP,
        key_path="",
        line=4,
        message=(
            "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence, line 3)"
        ),
    ),
    Case(
        id="two-documents",
        files=app("tags: [a]\n---\ntags: [b]\n"),
        file=APP,
        key_path="",
        line=2,
        message=(
            "invalid YAML: found another document "
            "(expected a single document in the stream, line 1)"
        ),
    ),
    Case(
        id="non-mapping-top-level",
        files=app("- build\n- test\n"),
        file=APP,
        key_path="",
        line=1,
        message="haz.yml must be a mapping, got a list",
    ),
    Case(
        id="scalar-workspace-file",
        files=ws("just text\n"),
        file=WS,
        key_path="",
        line=1,
        message="workspace.yml must be a mapping, got the string 'just text'",
    ),
    Case(
        id="tasks-is-a-list",
        files=app("tasks:\n  - build\n"),
        file=APP,
        key_path="tasks",
        line=2,
        message="tasks must be a mapping, got a list",
    ),
    Case(
        id="literal-project-without-haz-yml",
        files={WS: "projects:\n  - app\n  - tools/codegen\n", APP: "", "tools/codegen/": ""},
        file=WS,
        key_path="projects[1]",
        line="tools/codegen",
        message="project directory 'tools/codegen' has no haz.yml",
    ),
    Case(
        id="literal-project-directory-missing",
        files={WS: "projects: [missing]\n"},
        file=WS,
        key_path="projects[0]",
        line=1,
        message="project directory 'missing' does not exist",
    ),
    Case(
        id="project-entry-escapes-the-workspace",
        files={WS: "projects: [../elsewhere]\n"},
        file=WS,
        key_path="projects[0]",
        line=1,
        message="'..' segment",
    ),
    Case(
        id="project-entry-bad-glob",
        files={WS: "projects: ['packages/{a,b']\n"},
        file=WS,
        key_path="projects[0]",
        line=1,
        message="unclosed '{'",
    ),
    Case(
        id="projects-is-a-string",
        files={WS: "projects: packages/*\n"},
        file=WS,
        key_path="projects",
        line=1,
        message="projects must be a list",
    ),
    Case(
        id="unknown-hash-function",
        files=ws("cache: {hash: md5}\n"),
        file=WS,
        key_path="cache.hash",
        line=1,
        message="expected one of blake3, sha256; got the string 'md5'",
    ),
    Case(
        id="concurrency-zero",
        files=ws("concurrency:\n  default: 0\n"),
        file=WS,
        key_path="concurrency.default",
        line="default",
        message="must be an integer >= 1, got 0",
    ),
    Case(
        id="concurrency-word",
        files=ws("concurrency:\n  default: many\n"),
        file=WS,
        key_path="concurrency.default",
        line="default",
        message="expected an integer >= 1, got the string 'many'",
    ),
    Case(
        id="concurrency-tag-zero",
        files=ws("concurrency:\n  tags: {heavy: 0}\n"),
        file=WS,
        key_path="concurrency.tags.heavy",
        line="heavy",
        message=">= 1",
    ),
    Case(
        id="bad-output-mode",
        files=ws("output: {mode: quiet}\n"),
        file=WS,
        key_path="output.mode",
        line=1,
        message="expected one of live, buffered",
    ),
    Case(
        id="bad-grace-period",
        files=ws("execution:\n  grace_period: true\n"),
        file=WS,
        key_path="execution.grace_period",
        line="grace_period",
        message="got the boolean true",
    ),
    Case(
        id="lock-as-a-string",
        files=ws("lock: 'true'\n"),
        file=WS,
        key_path="lock",
        line=1,
        message="expected true or false",
    ),
    Case(
        id="bad-remote-url-scheme",
        files=ws("remote:\n  url: https://cache:7070\n"),
        file=WS,
        key_path="remote.url",
        line="url",
        message="must start with grpc:// or grpcs://",
    ),
    Case(
        id="remote-url-without-host",
        files=ws("remote:\n  url: 'grpc://:7070'\n"),
        file=WS,
        key_path="remote.url",
        line="url",
        message="has no host",
    ),
    Case(
        id="bad-remote-namespace",
        files=ws("remote:\n  namespace: team/a\n"),
        file=WS,
        key_path="remote.namespace",
        line="namespace",
        message="invalid namespace",
    ),
    Case(
        id="bad-remote-mode-with-suggestion",
        files=ws("remote:\n  mode: readwrite\n"),
        file=WS,
        key_path="remote.mode",
        line="mode",
        message="did you mean 'read-write'?",
    ),
    Case(
        id="bad-token-env",
        files=ws("remote:\n  token_env: $TOKEN\n"),
        file=WS,
        key_path="remote.token_env",
        line="token_env",
        message="not a valid environment variable name",
    ),
    Case(
        id="tls-cert-without-key",
        files=ws("remote:\n  tls:\n    cert: c.pem\n"),
        file=WS,
        key_path="remote.tls.cert",
        line="cert",
        message="needs its key too",
    ),
    Case(
        id="duplicate-project-names-from-directories",
        files={
            WS: "projects:\n  - apps/*\n  - libs/*\n",
            "apps/web/haz.yml": "",
            "libs/web/haz.yml": "",
        },
        file=WS,
        key_path="projects[1]",
        line="libs/*",
        message="project name 'web' is used by the projects in 'apps/web' and 'libs/web'",
    ),
    Case(
        id="duplicate-project-names-from-name-key",
        files={
            WS: "projects: [a, b]\n",
            "a/haz.yml": "tags: [x]\n",
            "b/haz.yml": "tags: [x]\nname: a\n",
        },
        file="b/haz.yml",
        key_path="name",
        line=2,
        message="project name 'a' is used by the projects in 'a' and 'b'",
    ),
    Case(
        id="overlay-without-tags-filter",
        files={WS: "", ".haz/tasks/lint.yml": "tasks:\n  lint: {command: [eslint]}\n"},
        file=".haz/tasks/lint.yml",
        key_path="tagsFilter",
        line=1,
        message="an overlay needs tagsFilter:",
    ),
    Case(
        id="overlay-empty-tags-filter",
        files={WS: "", ".haz/tasks/lint.yml": "tasks: {}\ntagsFilter: []\n"},
        file=".haz/tasks/lint.yml",
        key_path="tagsFilter",
        line=2,
        message="at least one tag",
    ),
    Case(
        id="overlay-task-error",
        files={
            WS: "",
            ".haz/tasks/lint.yml": (
                "tagsFilter: [fe]\ntasks:\n  lint: {command: [x], timeout: -1}\n"
            ),
        },
        file=".haz/tasks/lint.yml",
        key_path="tasks.lint.timeout",
        line=3,
        message="invalid duration '-1'",
    ),
]


def _line_of(text: str, marker: str) -> int:
    lines = textwrap.dedent(text).lstrip("\n").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if marker in line)


def _load_error(write_tree: WriteTree, files: dict[str, str]) -> ConfigError:
    root = write_tree(files)
    with pytest.raises(ConfigError) as info:
        load_workspace(root)
    return info.value


def test_the_table_is_large_enough() -> None:
    """The brief asks for at least 25 distinct bad inputs."""
    assert len({case.id for case in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_reported_with_file_key_path_and_line(
    write_tree: WriteTree, case: Case
) -> None:
    """CFG-040: one diagnostic naming the file, the key path and the line, rendered so."""
    error = _load_error(write_tree, case.files)
    line = case.line if isinstance(case.line, int) else _line_of(case.files[case.file], case.line)
    assert len(error.diagnostics) == 1, error.render()
    diagnostic = error.diagnostics[0]
    assert (diagnostic.file, diagnostic.key_path, diagnostic.line) == (
        case.file,
        case.key_path,
        line,
    ), error.render()
    assert case.message in diagnostic.message
    where = f"{case.file}:{line}: " + (f"{case.key_path}: " if case.key_path else "")
    assert f"  {where}{diagnostic.message}" in str(error)
    assert error.exit_code == 2


def test_all_errors_of_a_load_are_reported_together(write_tree: WriteTree) -> None:
    """CFG-040: errors in several files and several keys come out in one ConfigError,
    sorted by file and line."""
    error = _load_error(
        write_tree,
        {
            WS: "projects: [a, b, missing]\nlock: maybe\n",
            "a/haz.yml": """
                tags: [ok, "not ok"]
                tasks:
                  build:
                    command: [make]
                    shell: make
                  test:
                    command: [pytest]
                    deps: [build]
                    inputs: [../x]
                    timeout: forever
                  -bad:
                    command: [x]
            """,
            "b/haz.yml": "tasks: [oops\n",
            ".haz/tasks/o.yml": "tasks: {}\n",
        },
    )
    got = [(d.file, d.key_path, d.line) for d in error.diagnostics]
    assert got == [
        (".haz/tasks/o.yml", "tagsFilter", 1),
        (WS, "projects[2]", 1),
        (WS, "lock", 2),
        ("a/haz.yml", "tags[1]", 1),
        ("a/haz.yml", "tasks.build.shell", 5),
        ("a/haz.yml", "tasks.test.deps[0]", 8),
        ("a/haz.yml", "tasks.test.inputs[0]", 9),
        ("a/haz.yml", "tasks.test.timeout", 10),
        ("a/haz.yml", "tasks.-bad", 11),
        ("b/haz.yml", "", 2),
    ]
    assert str(error).startswith("10 configuration errors:\n")
    assert got == sorted(got, key=lambda t: (t[0], t[2]))


def test_a_missing_workspace_file_is_a_config_error(write_tree: WriteTree) -> None:
    """DISC-001: loading a directory without .haz/workspace.yml fails clearly."""
    root = write_tree({"haz.yml": ""})
    with pytest.raises(ConfigError) as info:
        load_workspace(root)
    assert info.value.diagnostics == (
        Diagnostic(file=WS, key_path="", line=None, message=f"not found in {root.resolve()}"),
    )


def test_an_overlay_with_the_yaml_extension_is_not_silently_ignored(
    write_tree: WriteTree,
) -> None:
    """CFG-040 spirit: a `.yaml` overlay would otherwise be ignored without a word."""
    error = _load_error(write_tree, {WS: "", ".haz/tasks/lint.yaml": "tagsFilter: [x]\n"})
    assert [d.render() for d in error.diagnostics] == [
        ".haz/tasks/lint.yaml: overlay files end in .yml; rename it to lint.yml"
    ]


def test_a_directory_name_with_no_valid_characters_needs_an_explicit_name(
    write_tree: WriteTree,
) -> None:
    """DISC-006: when sanitising leaves nothing, the project must set `name:`."""
    error = _load_error(write_tree, {WS: "projects: ['*']\n", "___/haz.yml": ""})
    assert [(d.file, d.key_path) for d in error.diagnostics] == [("___/haz.yml", "name")]
    assert "set name: in haz.yml" in error.diagnostics[0].message
