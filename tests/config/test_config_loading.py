"""Loading valid workspaces: project modes, names, overlays, every field, defaults (SPEC §1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hazremote.config import load_workspace
from hazremote.domain.model import (
    DEFAULT_GRACE_PERIOD_S,
    CommandAction,
    EnvSpec,
    HashName,
    MutexMode,
    MutexSpec,
    Origin,
    OutputMode,
    RemoteMode,
    RemotePolicy,
    ShellAction,
    TaskSpec,
    Workspace,
    WorkspaceSettings,
)
from hazremote.domain.refs import RefKind, TaskRef
from hazremote.errors import ConfigError
from tests.config.conftest import WriteTree

WS = ".haz/workspace.yml"


def _names(workspace: Workspace) -> list[tuple[str, str]]:
    return [(p.name, p.dir) for p in workspace.projects]


def _task(workspace: Workspace, project: str, task: str) -> TaskSpec:
    found = workspace.project(project)
    assert found is not None, project
    return found.tasks[task]


# -- DISC-003: implicit mode -----------------------------------------------------------------


def test_implicit_mode_makes_the_root_the_single_project_named_root(
    write_tree: WriteTree,
) -> None:
    """DISC-003/006: no projects + root haz.yml → one project `root` at dir ""."""
    root = write_tree({WS: "lock: true\n", "haz.yml": "tasks: {b: {command: [true]}}\n"})
    workspace = load_workspace(root)
    assert _names(workspace) == [("root", "")]
    assert workspace.projects[0].file == "haz.yml"
    assert workspace.root == root.resolve()


def test_implicit_root_project_name_never_comes_from_the_directory(
    write_tree: WriteTree,
) -> None:
    """DISC-006: clones at different paths agree — the root is `root`, not the dir name."""
    root = write_tree({WS: "projects: []\n", "haz.yml": ""})
    assert root.name == "ws"
    assert _names(load_workspace(root)) == [("root", "")]


def test_implicit_root_project_takes_an_explicit_name(write_tree: WriteTree) -> None:
    """DISC-006: `name:` overrides the default `root`."""
    root = write_tree({WS: "projects:\n", "haz.yml": "name: mono\n"})
    assert _names(load_workspace(root)) == [("mono", "")]


def test_empty_workspace_file_and_no_haz_yml_gives_no_projects(write_tree: WriteTree) -> None:
    """DISC-003: with neither projects nor a root haz.yml the workspace has no project."""
    root = write_tree({WS: ""})
    workspace = load_workspace(root)
    assert workspace.projects == ()
    assert workspace.overlays == ()
    assert workspace.settings == WorkspaceSettings()


# -- DISC-005: explicit mode -----------------------------------------------------------------


def test_globs_select_only_directories_holding_haz_yml(write_tree: WriteTree) -> None:
    """DISC-005: `packages/*` selects the directories with a haz.yml and skips the others."""
    root = write_tree(
        {
            WS: "projects: [packages/*, tools/codegen]\n",
            "packages/web/haz.yml": "",
            "packages/api/haz.yml": "tags: [backend]\n",
            "packages/README/": "",
            "packages/notes.txt": "not a directory",
            "packages/web/nested/haz.yml": "",  # deeper than `*` reaches
            "tools/codegen/haz.yml": "",
        }
    )
    assert _names(load_workspace(root)) == [
        ("api", "packages/api"),
        ("codegen", "tools/codegen"),
        ("web", "packages/web"),
    ]


def test_a_glob_may_select_nothing(write_tree: WriteTree) -> None:
    """DISC-005: a glob matching no directory (or none with haz.yml) is fine."""
    root = write_tree(
        {WS: "projects: [missing/*, empty/*, lib]\n", "empty/x/": "", "lib/haz.yml": ""}
    )
    assert _names(load_workspace(root)) == [("lib", "lib")]


def test_dot_entry_names_the_root_project(write_tree: WriteTree) -> None:
    """DISC-005/006: `.` is the root itself, named `root` by default."""
    root = write_tree({WS: "projects: [., lib]\n", "haz.yml": "", "lib/haz.yml": ""})
    assert _names(load_workspace(root)) == [("lib", "lib"), ("root", "")]


def test_double_star_glob_skips_git_haz_and_node_modules(write_tree: WriteTree) -> None:
    """DISC-005: the glob walk never enters .git, .haz or node_modules."""
    root = write_tree(
        {
            WS: "projects: ['**']\n",
            "a/haz.yml": "",
            "a/b/c/haz.yml": "",
            "node_modules/dep/haz.yml": "",
            "a/node_modules/dep/haz.yml": "",
            ".git/x/haz.yml": "",
            ".haz/y/haz.yml": "",
            ".config/haz.yml": "",  # `*` and `**` match dot directories (PATH)
        }
    )
    assert _names(load_workspace(root)) == [("a", "a"), ("c", "a/b/c"), ("config", ".config")]


def test_brace_and_class_globs_follow_path_semantics(write_tree: WriteTree) -> None:
    """DISC-005/PATH: `{a,b}` alternation and `[...]` classes select directories."""
    root = write_tree(
        {
            WS: "projects: ['{apps,libs}/*', 'svc-[0-9]']\n",
            "apps/web/haz.yml": "",
            "libs/ui/haz.yml": "",
            "other/x/haz.yml": "",
            "svc-1/haz.yml": "",
            "svc-a/haz.yml": "",
        }
    )
    assert sorted(p.dir for p in load_workspace(root).projects) == [
        "apps/web",
        "libs/ui",
        "svc-1",
    ]


def test_a_directory_selected_twice_is_one_project(write_tree: WriteTree) -> None:
    """DISC-005: overlapping entries do not duplicate a project."""
    root = write_tree({WS: "projects: [packages/*, packages/web]\n", "packages/web/haz.yml": ""})
    assert _names(load_workspace(root)) == [("web", "packages/web")]


def test_nested_projects_are_allowed(write_tree: WriteTree) -> None:
    """DISC-005: a project inside another project's directory is its own project."""
    root = write_tree(
        {WS: "projects: [app, app/plugin]\n", "app/haz.yml": "", "app/plugin/haz.yml": ""}
    )
    assert _names(load_workspace(root)) == [("app", "app"), ("plugin", "app/plugin")]


def test_symlinked_directories_are_not_followed_by_globs(
    write_tree: WriteTree, tmp_path: Path
) -> None:
    """DISC-005: the glob walk never follows symbolic links (no cycles, nothing outside)."""
    root = write_tree({WS: "projects: ['**']\n", "real/haz.yml": ""})
    outside = tmp_path / "outside"
    (outside / "p").mkdir(parents=True)
    (outside / "p" / "haz.yml").write_text("")
    os.symlink(outside, root / "linked")
    os.symlink(root, root / "real" / "loop")
    assert _names(load_workspace(root)) == [("real", "real")]


def test_project_names_are_sanitised_directory_basenames(write_tree: WriteTree) -> None:
    """DISC-006/ID-001: invalid characters become `-`, a leading `_`/`-` run is dropped."""
    root = write_tree(
        {
            WS: "projects: [packages/*]\n",
            "packages/my.lib/haz.yml": "",
            "packages/_internal/haz.yml": "",
            "packages/café au lait/haz.yml": "",
            "packages/named/haz.yml": "name: custom\n",
        }
    )
    assert _names(load_workspace(root)) == [
        ("caf--au-lait", "packages/café au lait"),
        ("custom", "packages/named"),
        ("internal", "packages/_internal"),
        ("my-lib", "packages/my.lib"),
    ]


def test_projects_come_in_name_order(write_tree: WriteTree) -> None:
    """Workspace.projects is in name order, whatever the directory order."""
    root = write_tree(
        {
            WS: "projects: [z, a, m]\n",
            "z/haz.yml": "name: alpha\n",
            "a/haz.yml": "name: zulu\n",
            "m/haz.yml": "",
        }
    )
    assert [p.name for p in load_workspace(root).projects] == ["alpha", "m", "zulu"]


def test_project_tags_are_kept_in_order_without_duplicates(write_tree: WriteTree) -> None:
    """SPEC §1 haz.yml `tags`; ID rules; numbers are accepted as written."""
    root = write_tree({WS: "", "haz.yml": "tags: [frontend, heavy, frontend, 2024]\n"})
    assert load_workspace(root).projects[0].tags == ("frontend", "heavy", "2024")


# -- overlays --------------------------------------------------------------------------------


def test_overlays_are_parsed_in_file_name_order(write_tree: WriteTree) -> None:
    """SPEC §1 `.haz/tasks/<overlay>.yml`: name = stem, tagsFilter, tasks; sorted by file."""
    root = write_tree(
        {
            WS: "",
            ".haz/tasks/zz-lint.yml": """
                tagsFilter: [frontend, backend]
                tasks:
                  lint: {command: [eslint, .], inputs: ["src/**"]}
            """,
            ".haz/tasks/aa-format.yml": """
                $schema: ../schema.json
                tagsFilter: [frontend]
                tasks:
                  fmt: {shell: prettier --write .}
            """,
            ".haz/tasks/README.md": "ignored",
        }
    )
    overlays = load_workspace(root).overlays
    assert [(o.name, o.file, o.tags_filter) for o in overlays] == [
        ("aa-format", ".haz/tasks/aa-format.yml", ("frontend",)),
        ("zz-lint", ".haz/tasks/zz-lint.yml", ("frontend", "backend")),
    ]
    lint = overlays[1].tasks["lint"]
    assert lint.action == CommandAction(argv=("eslint", "."))
    assert lint.inputs == ("src/**",)
    assert lint.origin == Origin(file=".haz/tasks/zz-lint.yml", key_path="tasks.lint", line=3)
    assert overlays[0].tasks["fmt"].action == ShellAction(shell="sh", script="prettier --write .")


# -- every task field ------------------------------------------------------------------------

FULL_PROJECT = """
name: web
tags: [frontend, heavy]
tasks:
  build:
    command: [node, build.js, 3, "--flag"]
    inputs: [src/**/*.ts, "!src/**/*.test.ts", package.json, /shared/tsconfig.json]
    outputs: [dist/**]
    deps: [~:codegen, lib:build, ^:gen, ^~:gen, "[tag]:gen", "[tag]~:gen"]
    weakDeps: [~:lint]
    mutex: db
    env:
      from_host: [NODE_VERSION, NODE_VERSION]
      pass_through: [PATH, HOME]
      override: { NODE_ENV: production, PORT: 8080, DEBUG: off, RATIO: 1.50, EMPTY: "" }
    cache: false
    remote: always
    platform: { pool: large, cores: 8 }
    timeout: 1h30m
  codegen:
    shell: "protoc --x && cp a b"
    mutex: "~:db"
  lint:
    shell: { bash: "set -o pipefail; eslint . | tee out" }
    mutex: { name: "~:lock", mode: shared }
    remote: never
  test:
    command: [pytest]
    mutex: { name: gpu }
    timeout: 90
"""


def _full(write_tree: WriteTree) -> Workspace:
    return load_workspace(write_tree({WS: "projects: [web]\n", "web/haz.yml": FULL_PROJECT}))


def test_every_task_field_is_parsed_to_its_value(write_tree: WriteTree) -> None:
    """SPEC §1 task fields: command, inputs, outputs, deps, weakDeps, mutex, env, cache,
    remote, platform, timeout — each to the model value."""
    build = _task(_full(write_tree), "web", "build")
    assert build.name == "build"
    assert build.action == CommandAction(argv=("node", "build.js", "3", "--flag"))
    assert build.inputs == (
        "src/**/*.ts",
        "!src/**/*.test.ts",
        "package.json",
        "/shared/tsconfig.json",
    )
    assert build.outputs == ("dist/**",)
    assert build.mutex == MutexSpec(name="db", project_scoped=False, mode=MutexMode.EXCLUSIVE)
    assert build.env == EnvSpec(
        from_host=("NODE_VERSION",),
        pass_through=("PATH", "HOME"),
        override=build.env.override,
    )
    assert dict(build.env.override) == {
        "NODE_ENV": "production",
        "PORT": "8080",
        "DEBUG": "off",
        "RATIO": "1.50",
        "EMPTY": "",
    }
    assert build.cache is False
    assert build.remote is RemotePolicy.ALWAYS
    assert dict(build.platform) == {"pool": "large", "cores": "8"}
    assert build.timeout_s == 5400.0
    assert build.origin == Origin(file="web/haz.yml", key_path="tasks.build", line=4)


def test_deps_are_parsed_references_with_their_origin(write_tree: WriteTree) -> None:
    """REF-001..008: all six forms, each RefEntry carries file, key path and line (CFG-040)."""
    build = _task(_full(write_tree), "web", "build")
    assert [entry.ref for entry in build.deps] == [
        TaskRef(RefKind.SAME, "codegen"),
        TaskRef(RefKind.PROJECT, "build", project="lib"),
        TaskRef(RefKind.ALL, "gen"),
        TaskRef(RefKind.ALL_OTHERS, "gen"),
        TaskRef(RefKind.TAG, "gen", tag="tag"),
        TaskRef(RefKind.TAG_OTHERS, "gen", tag="tag"),
    ]
    assert build.deps[1].origin == Origin(
        file="web/haz.yml", key_path="tasks.build.deps[1]", line=8
    )
    assert [(e.ref, e.origin.key_path, e.origin.line) for e in build.weak_deps] == [
        (TaskRef(RefKind.SAME, "lint"), "tasks.build.weakDeps[0]", 9)
    ]


def test_shell_forms_and_mutex_forms(write_tree: WriteTree) -> None:
    """SPEC §1 shell string → sh, {bash: script} → bash; MUTEX-001/002 scope and mode."""
    workspace = _full(write_tree)
    codegen = _task(workspace, "web", "codegen")
    assert codegen.action == ShellAction(shell="sh", script="protoc --x && cp a b")
    assert codegen.mutex == MutexSpec(name="db", project_scoped=True)
    lint = _task(workspace, "web", "lint")
    assert lint.action == ShellAction(shell="bash", script="set -o pipefail; eslint . | tee out")
    assert lint.mutex == MutexSpec(name="lock", project_scoped=True, mode=MutexMode.SHARED)
    assert lint.remote is RemotePolicy.NEVER
    test = _task(workspace, "web", "test")
    assert test.mutex == MutexSpec(name="gpu")
    assert test.timeout_s == 90.0


def test_task_defaults(write_tree: WriteTree) -> None:
    """Absent task fields take the model defaults (no inputs means no input files)."""
    root = write_tree({WS: "", "haz.yml": "tasks: {t: {command: [make]}}\n"})
    task = _task(load_workspace(root), "root", "t")
    assert task == TaskSpec(
        name="t",
        action=CommandAction(argv=("make",)),
        origin=Origin(file="haz.yml", key_path="tasks.t", line=1),
    )
    assert task.cache is True
    assert task.remote is None
    assert task.timeout_s is None


def test_project_tasks_are_read_only_and_sorted(write_tree: WriteTree) -> None:
    """Values are immutable: the task mapping cannot be modified."""
    workspace = _full(write_tree)
    project = workspace.project("web")
    assert project is not None
    assert list(project.tasks) == ["build", "codegen", "lint", "test"]
    with pytest.raises(TypeError):
        project.tasks["x"] = project.tasks["build"]  # type: ignore[index]  # read-only on purpose


def test_null_values_mean_absent(write_tree: WriteTree) -> None:
    """Decision: `key:` with no value is the same as leaving the key out."""
    root = write_tree(
        {
            WS: "projects:\nremote:\ncache:\n",
            "haz.yml": """
                name:
                tags:
                tasks:
                  t:
                    command: [true]
                    inputs:
                    timeout:
            """,
        }
    )
    workspace = load_workspace(root)
    assert workspace.settings == WorkspaceSettings()
    task = _task(workspace, "root", "t")
    assert task.inputs is None  # PATH-001..016: absent, so the project's files (not `[]`)
    assert task.timeout_s is None


def test_yaml_merge_keys_are_honoured(write_tree: WriteTree) -> None:
    """YAML `<<: *anchor` works as in the safe loader; own keys win over merged ones."""
    root = write_tree(
        {
            WS: "",
            "haz.yml": """
                tasks:
                  build: &base
                    command: [make, build]
                    inputs: [src/**]
                    cache: false
                  test:
                    <<: *base
                    command: [make, test]
            """,
        }
    )
    test = _task(load_workspace(root), "root", "test")
    assert test.action == CommandAction(argv=("make", "test"))
    assert test.inputs == ("src/**",)
    assert test.cache is False


def test_schema_key_is_ignored_everywhere(write_tree: WriteTree) -> None:
    """SPEC §1: `$schema` is allowed and ignored (top level and nested mappings)."""
    root = write_tree(
        {
            WS: "$schema: https://example.com/ws.json\nremote: {$schema: x, url: grpc://h:1}\n",
            "haz.yml": """
                $schema: ./haz.schema.json
                tasks:
                  t: {$schema: x, command: [true], env: {$schema: y}}
            """,
        }
    )
    workspace = load_workspace(root)
    assert workspace.settings.remote.url == "grpc://h:1"
    assert _task(workspace, "root", "t").action == CommandAction(argv=("true",))


# -- workspace.yml ---------------------------------------------------------------------------


def test_every_workspace_setting_is_parsed(write_tree: WriteTree) -> None:
    """SPEC §1 workspace.yml: lock, cache, concurrency, output, execution, remote."""
    root = write_tree(
        {
            WS: """
                projects: []
                lock: true
                cache: { hash: sha256, clean: { max_age: 7d, max_size: 10GB } }
                concurrency: { default: 4, tags: { heavy: 1, io: 8 } }
                output: { mode: buffered }
                execution: { grace_period: 2500ms }
                remote:
                  url: grpcs://cache.internal:7070
                  namespace: main
                  mode: off
                  token_env: HAZ_REMOTE_TOKEN
                  tls: { ca: certs/ca.pem, cert: certs/client.pem, key: certs/client.key }
                  execute: auto
                  platform: { os: linux, pool: default }
            """
        }
    )
    settings = load_workspace(root).settings
    assert settings.lock is True
    assert settings.cache.hash is HashName.SHA256
    assert settings.cache.clean_max_age_s == 7 * 86400
    assert settings.cache.clean_max_size == 10 * 1000**3
    assert settings.concurrency.default == 4
    assert dict(settings.concurrency.tags) == {"heavy": 1, "io": 8}
    assert settings.output is OutputMode.BUFFERED
    assert settings.execution.grace_period_s == 2.5
    remote = settings.remote
    assert remote.url == "grpcs://cache.internal:7070"
    assert remote.namespace == "main"
    assert remote.mode is RemoteMode.OFF  # `off` is not turned into false
    assert remote.token_env == "HAZ_REMOTE_TOKEN"
    assert (remote.tls.ca, remote.tls.cert, remote.tls.key) == (
        "certs/ca.pem",
        "certs/client.pem",
        "certs/client.key",
    )
    assert remote.execute is RemotePolicy.AUTO
    assert dict(remote.platform) == {"os": "linux", "pool": "default"}


def test_workspace_settings_defaults(write_tree: WriteTree) -> None:
    """Absent settings take the model defaults; `auto` concurrency is None."""
    root = write_tree(
        {WS: "concurrency: {default: auto}\ncache: {clean: {max_size: 512MiB}}\noutput: {}\n"}
    )
    settings = load_workspace(root).settings
    assert settings.lock is False
    assert settings.cache.hash is HashName.BLAKE3
    assert settings.cache.clean_max_age_s is None
    assert settings.cache.clean_max_size == 512 * 1024**2
    assert settings.concurrency.default is None
    assert dict(settings.concurrency.tags) == {}
    assert settings.output is OutputMode.LIVE
    assert settings.execution.grace_period_s == DEFAULT_GRACE_PERIOD_S
    assert settings.remote.url is None
    assert settings.remote.mode is None
    assert settings.remote.execute is None


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("off", RemoteMode.OFF),
        ("read-only", RemoteMode.READ_ONLY),
        ("read-write", RemoteMode.READ_WRITE),
    ],
)
def test_remote_modes(write_tree: WriteTree, mode: str, expected: RemoteMode) -> None:
    """SPEC §1 remote.mode: off | read-only | read-write."""
    root = write_tree({WS: f"remote: {{url: grpc://h, mode: {mode}}}\n"})
    assert load_workspace(root).settings.remote.mode is expected


# -- no writes ---------------------------------------------------------------------------------


def _tree(root: Path) -> list[tuple[str, int, int]]:
    out = []
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(directory) / name
            stat = path.lstat()
            out.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return sorted(out)


def test_loading_never_writes_into_the_workspace(write_tree: WriteTree) -> None:
    """Loading — successful or failing — creates, changes or removes nothing."""
    root = write_tree(
        {
            WS: "projects: [packages/*, '**']\n",
            "packages/web/haz.yml": FULL_PROJECT,
            "packages/bad/haz.yml": "tasks: {t: {shell: x, command: [y]}}\n",
            ".haz/tasks/o.yml": "tagsFilter: [frontend]\n",
        }
    )
    before = _tree(root)
    with pytest.raises(ConfigError):
        load_workspace(root)
    assert _tree(root) == before

    (root / "packages/bad/haz.yml").write_text("")
    before = _tree(root)
    assert len(load_workspace(root).projects) == 2
    assert _tree(root) == before
