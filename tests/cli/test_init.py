"""``haz init`` on realistic repositories: declarations, markers, npm scripts, names.

Spec coverage:
* SPEC §5 ``haz init`` — projects from workspace declarations before marker files; vendored
  and fixture directories never proposed on markers alone; without ``--yes`` and without a
  terminal it lists what it would write and exits 2; generated files load (``haz check``).
* DISC-005 — the written ``projects:`` list is literal and valid at once.
* DISC-006, ID-001..003 — generated project and task names are valid and unique.
* REF-001..008 — generated ``deps`` resolve (``haz query`` shows them resolved).
* PATH-001..016 — generated tasks have no ``inputs`` key (the project-files default).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hazremote.cli._init_repo import _go_work_uses, _is_uncached, looks_vendored
from tests.support.workspaces import write_files

HAZ = str(Path(sys.executable).parent / "haz")


def pkg(name: str | None = None, **fields: object) -> str:
    """A package.json text."""
    data: dict[str, object] = {} if name is None else {"name": name}
    data.update(fields)
    return json.dumps(data)


@dataclass(frozen=True)
class Initialised:
    root: Path
    stderr: str

    def project(self, rel: str) -> dict[str, object]:
        path = self.root / rel / "haz.yml" if rel != "." else self.root / "haz.yml"
        loaded = yaml.safe_load(path.read_text())
        assert isinstance(loaded, dict)
        return loaded

    def tasks(self, rel: str) -> dict[str, dict[str, object]]:
        tasks = self.project(rel)["tasks"]
        assert isinstance(tasks, dict)
        return tasks

    def projects(self) -> list[str]:
        loaded = yaml.safe_load((self.root / ".haz" / "workspace.yml").read_text())
        return list(loaded["projects"])


def haz(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HAZ, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def init(root: Path, files: dict[str, str]) -> Initialised:
    """Write ``files``, run the real ``haz init --yes``, and check that the result loads."""
    write_files(root, files)
    result = haz("init", "--yes", cwd=root)
    assert result.returncode == 0, result.stderr
    check = haz("check", "--workspace", cwd=root)
    assert check.returncode == 0, check.stderr
    assert check.stdout.endswith("task(s) validated.\n")
    return Initialised(root=root, stderr=result.stderr)


def query(root: Path) -> dict[str, list[str]]:
    result = haz("query", "--format", "json", cwd=root)
    assert result.returncode == 0, result.stderr
    return {f"{r['project']}:{r['task']}": r["deps"] for r in json.loads(result.stdout)}


# -- fixture repositories, one per declaration kind and per defect of the old init ------------

NPM_WORKSPACES = {
    "package.json": pkg(
        "mono",
        private=True,
        workspaces=["packages/*", "apps/**", "!packages/legacy"],
        scripts={"build": "turbo run build", "dev": "turbo run dev"},
    ),
    "package-lock.json": "{}",
    "packages/ui/package.json": pkg("@acme/ui", scripts={"build": "tsc", "prepare": "husky"}),
    "packages/legacy/package.json": pkg("@acme/legacy", scripts={"build": "tsc"}),
    "packages/notes/README.md": "no package.json here",
    "apps/web/site/package.json": pkg(
        "@acme/web",
        main="./dist/index.js",
        scripts={"build": "vite build", "dev": "vite"},
        dependencies={"@acme/ui": "^1.0.0", "react": "^18"},
    ),
}
NPM_OBJECT_FORM = {
    "package.json": pkg("mono", workspaces={"packages": ["libs/*"], "nohoist": ["**/x"]}),
    "yarn.lock": "",
    "libs/a/package.json": pkg("a", scripts={"build": "tsc", "test": "jest"}),
    "libs/b/package.json": pkg(
        "b", scripts={"build": "tsc"}, peerDependencies={"a": "workspace:^"}
    ),
}
PNPM = {
    "package.json": pkg("mono", scripts={"build": "pnpm -r build"}),
    "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
    "pnpm-workspace.yaml": "packages:\n  - 'packages/**'\n  - 'tools/cli'\n  - '!**/test/**'\n",
    "packages/core/package.json": pkg("@x/core", scripts={"build": "tsc", "lint:fix": "eslint ."}),
    "packages/app/package.json": pkg(
        "@x/app", scripts={"build": "tsc"}, devDependencies={"@x/core": "workspace:*"}
    ),
    "packages/app/test/package.json": pkg("app-test-fixture"),
    "tools/cli/package.json": pkg("@x/cli", scripts={"start": "node cli.js"}),
}
CARGO = {
    "Cargo.toml": (
        '[package]\nname = "tool"\nversion = "0.1.0"\n\n'
        '[workspace]\nmembers = ["crates/*"]\nexclude = ["crates/experimental"]\n'
    ),
    "crates/core/Cargo.toml": '[package]\nname = "tool-core"\n',
    "crates/cli/Cargo.toml": '[package]\nname = "tool-cli"\n',
    "crates/experimental/Cargo.toml": '[package]\nname = "exp"\n',
    "crates/docs/README.md": "not a crate",
}
GO_WORK = {
    "go.work": (
        'go 1.22\n\n// the services\nuse (\n\t./svc/api // HTTP\n\t"./svc/worker"\n)\n'
        "use ./lib\nreplace example.com/x => ./x\n"
    ),
    "svc/api/go.mod": "module example.com/api\n",
    "svc/worker/go.mod": "module example.com/worker\n",
    "lib/go.mod": "module example.com/lib\n",
    "x/go.mod": "module example.com/x\n",
}
UV = {
    "pyproject.toml": (
        '[project]\nname = "app"\n\n[tool.uv.workspace]\n'
        'members = ["packages/*"]\nexclude = ["packages/scratch"]\n'
    ),
    "packages/alpha/pyproject.toml": '[project]\nname = "alpha"\n',
    "packages/beta/pyproject.toml": '[project]\nname = "beta.utils"\n',
    "packages/scratch/pyproject.toml": '[project]\nname = "scratch"\n',
}
C_LIBRARY = {  # the repository of the issue: no declaration, a vendored framework, tests
    "Makefile": "all:\n",
    "lib/Makefile": "all:\n",
    "utils/Makefile": "all:\n",
    "third_party/unity/Makefile": "all:\n",
    "tests/Makefile": "all:\n",
    "fuzz/Makefile": "all:\n",
    "src/vendor/zlib/Makefile": "all:\n",
    "go/testdata/mod/go.mod": "module fixture\n",
    "web/fixtures/app/package.json": pkg("fixture-app", scripts={"build": "x"}),
}
SCRIPTS = {
    "package.json": pkg(
        "@acme/kitchen-sink",
        scripts={
            "prebuild": "rimraf dist",
            "build": "tsc",
            "postbuild": "cp x dist",
            "build:types": "tsc -d",
            "preinstall": "x",
            "postinstall": "patch-package",
            "prepare": "husky",
            "prepublishOnly": "npm test",
            "prepack": "x",
            "postpack": "x",
            "version": "changeset version",
            "pretest": "x",
            "test": "vitest run",
            "test:watch": "vitest",
            "preview": "vite preview",
            "prettier": "prettier --check .",
            "dev": "vite",
            "start": "node server.js",
            "serve": "serve dist",
            "watch": "tsc -w",
            "lint": "eslint .",
            "lint:fix": "eslint --fix .",
            "format": "prettier -w .",
            "format:check": "prettier -c .",
            "fmt": "prettier -w .",
            "css:dev": "postcss -w",
        },
    ),
}
NAMES = {
    "package.json": pkg(workspaces=["packages/*", "apps/*", "a/*", "b/*"]),
    "packages/utils/package.json": pkg("@acme/utils", scripts={"build": "tsc"}),
    "packages/other-utils/package.json": pkg("@other/utils", scripts={"build": "tsc"}),
    "packages/web/package.json": pkg("@acme/web", scripts={"build": "vite build"}),
    "apps/site/package.json": pkg(
        "web", scripts={"build": "next build"}, dependencies={"@acme/web": "1.x"}
    ),
    "apps/consumer/package.json": pkg(
        "consumer",
        scripts={"build": "tsc"},
        dependencies={"@acme/utils": "workspace:*", "@other/utils": "*"},
    ),
    "a/shared/Makefile": "all:\n",
    "b/shared/Makefile": "all:\n",
}
EXISTING = {
    "package.json": pkg(workspaces=["packages/*"]),
    "packages/lib/package.json": pkg("@acme/lib", scripts={"build": "tsc"}),
    "packages/lib/haz.yml": "name: corelib\ntasks:\n  build: {command: [make]}\n",
    "packages/app/package.json": pkg(
        "@acme/app", scripts={"build": "tsc"}, dependencies={"@acme/lib": "workspace:*"}
    ),
}
FIXTURES = {
    "npm-workspaces": NPM_WORKSPACES,
    "npm-object-form": NPM_OBJECT_FORM,
    "pnpm": PNPM,
    "cargo": CARGO,
    "go-work": GO_WORK,
    "uv": UV,
    "c-library": C_LIBRARY,
    "scripts": SCRIPTS,
    "names": NAMES,
    "existing": EXISTING,
}


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_every_generated_repository_validates(kind: str, tmp_path: Path) -> None:
    """The real `haz check --workspace` accepts what `haz init --yes` wrote (SPEC §5)."""
    done = init(tmp_path, FIXTURES[kind])
    assert done.projects()
    for rel in done.projects():
        assert all("inputs" not in spec for spec in done.tasks(rel).values())  # PATH default


def test_npm_workspaces_globs_negations_and_only_existing_packages(tmp_path: Path) -> None:
    done = init(tmp_path, NPM_WORKSPACES)
    assert done.projects() == ["apps/web/site", "packages/ui"]  # the root is no project
    assert "packages/legacy: package.json workspaces excludes it" in done.stderr
    assert "projects from: package.json workspaces" in done.stderr
    assert "packages/notes" not in done.stderr  # a glob match without package.json: not a package
    assert query(tmp_path) == {"web:build": ["ui:build"], "web:dev": [], "ui:build": []}
    assert done.tasks("apps/web/site")["build"]["command"] == ["npm", "run", "build"]
    assert done.tasks("apps/web/site")["build"]["outputs"] == ["dist/**"]  # from "main"
    assert done.project("apps/web/site")["name"] == "web"  # "@acme/web" without its scope


def test_npm_object_form_with_yarn_and_a_peer_dependency(tmp_path: Path) -> None:
    done = init(tmp_path, NPM_OBJECT_FORM)
    assert done.projects() == ["libs/a", "libs/b"]
    assert done.tasks("libs/a")["test"]["command"] == ["yarn", "run", "test"]
    assert query(tmp_path)["b:build"] == ["a:build"]  # peerDependencies, workspace:^


def test_pnpm_workspace_yaml_with_a_negated_glob(tmp_path: Path) -> None:
    done = init(tmp_path, PNPM)
    assert done.projects() == ["packages/app", "packages/core", "tools/cli"]
    assert "packages/app/test: pnpm-workspace.yaml packages excludes it" in done.stderr
    assert done.tasks("packages/core")["build"]["command"] == ["pnpm", "run", "build"]
    assert done.tasks("packages/core")["lint-fix"]["cache"] is False
    assert done.tasks("tools/cli")["start"]["cache"] is False
    assert query(tmp_path)["app:build"] == ["core:build"]  # devDependencies, workspace:*


def test_cargo_members_exclude_and_root_package(tmp_path: Path) -> None:
    done = init(tmp_path, CARGO)
    assert done.projects() == [".", "crates/cli", "crates/core"]
    assert "crates/experimental: Cargo.toml [workspace] members excludes it" in done.stderr
    assert done.project("crates/core")["name"] == "tool-core"  # the crate's name
    assert "cargo, build" in (tmp_path / "crates/core/haz.yml").read_text()  # an example


def test_go_work_block_and_single_use_directives(tmp_path: Path) -> None:
    done = init(tmp_path, GO_WORK)
    assert done.projects() == ["lib", "svc/api", "svc/worker"]
    assert "x: its go.mod is in no workspace declaration" in done.stderr  # replace is no use


@pytest.mark.parametrize(
    ("text", "uses"),
    [
        ("use ./a\n", ["./a"]),
        ("use (\n  ./a\n  ./b // two\n)\n", ["./a", "./b"]),
        ('use "./with space"\nuse (./c)\n', ["./with space", "./c"]),
        ("go 1.21\n// use ./commented\ntoolchain go1.22\n", []),
        ("use (\n)\nuse .\n", ["."]),
    ],
)
def test_go_work_use_parsing(text: str, uses: list[str]) -> None:
    assert _go_work_uses(text) == uses


def test_uv_workspace_members_exclude_and_root_project(tmp_path: Path) -> None:
    done = init(tmp_path, UV)
    assert done.projects() == [".", "packages/alpha", "packages/beta"]
    assert "packages/scratch: [tool.uv.workspace] members excludes it" in done.stderr
    assert done.project("packages/beta")["name"] == "beta-utils"  # "beta.utils", ID rules


def test_markers_alone_never_propose_vendored_or_fixture_directories(tmp_path: Path) -> None:
    done = init(tmp_path, C_LIBRARY)
    assert done.projects() == [".", "fuzz", "lib", "utils"]
    reason = "looks vendored/fixture; add it to projects: if it is yours"
    for skipped in ("third_party/unity", "tests", "src/vendor/zlib", "go/testdata/mod"):
        assert f"skipped: {skipped}: {reason}" in done.stderr
        assert f"#   {skipped}: {reason}" in (tmp_path / ".haz/workspace.yml").read_text()
    assert "web/fixtures/app" in done.stderr


def test_a_declared_member_in_a_vendored_looking_directory_is_proposed(tmp_path: Path) -> None:
    done = init(
        tmp_path,
        {
            "package.json": pkg(workspaces=["vendor/*", "test-utils"]),
            "vendor/patched/package.json": pkg("patched"),
            "test-utils/package.json": pkg("test-utils", scripts={"build": "tsc"}),
        },
    )
    assert done.projects() == ["test-utils", "vendor/patched"]  # declared: they are yours


@pytest.mark.parametrize(
    ("rel", "vendored"),
    [
        ("vendor/x", True),
        ("third_party/gtest", True),
        ("deps/lua", True),
        ("a/testdata/b", True),
        ("tests", True),
        ("test", True),
        ("testing/e2e", True),
        ("src/__fixtures__/app", True),
        ("ThirdParty/Boost", True),
        ("packages/web", False),
        ("lib", False),
        ("attest", False),
        ("contest/app", False),
    ],
)
def test_looks_vendored(rel: str, vendored: bool) -> None:
    assert looks_vendored(rel) is vendored


def test_lifecycle_hooks_are_not_tasks_and_mutating_scripts_are_uncached(tmp_path: Path) -> None:
    done = init(tmp_path, SCRIPTS)
    tasks = done.tasks(".")
    assert sorted(tasks) == [
        "build",
        "build-types",
        "css-dev",
        "dev",
        "fmt",
        "format",
        "format-check",
        "lint",
        "lint-fix",
        "prettier",
        "preview",
        "serve",
        "start",
        "test",
        "test-watch",
        "watch",
    ]
    uncached = sorted(t for t, spec in tasks.items() if spec.get("cache") is False)
    assert uncached == [
        "css-dev",
        "dev",
        "fmt",
        "format",
        "lint-fix",
        "preview",
        "serve",
        "start",
        "test-watch",
        "watch",
    ]
    assert tasks["build-types"]["command"] == ["npm", "run", "build:types"]
    assert all(spec["env"] == {"pass_through": ["PATH", "HOME"]} for spec in tasks.values())
    text = (tmp_path / "haz.yml").read_text()
    assert "postinstall, postpack, prebuild, preinstall, prepack, prepare" in text


@pytest.mark.parametrize(
    ("script", "uncached"),
    [
        ("fix", True),
        ("eslint-fix", True),
        ("lint:fix", True),
        ("format:write", True),
        ("dev:server", True),
        ("start:prod", True),
        ("build", False),
        ("format:check", False),
        ("fmt:check", False),
        ("test", False),
        ("devtools", False),
        ("typecheck", False),
    ],
)
def test_uncached_script_names(script: str, uncached: bool) -> None:
    assert _is_uncached(script) is uncached


def test_package_names_become_unique_valid_project_names_and_deps_use_them(
    tmp_path: Path,
) -> None:
    done = init(tmp_path, NAMES)
    names = {
        rel: yaml.safe_load((tmp_path / rel / "haz.yml").read_text()).get("name")
        for rel in done.projects()
    }
    assert names == {
        "a/shared": "a-shared",
        "b/shared": "b-shared",
        "apps/consumer": None,  # "consumer" is the directory's own name: no name: line
        "apps/site": "web",  # the package named exactly "web" keeps it
        "packages/other-utils": None,  # the directory's name is "other-utils" already
        "packages/utils": "acme-utils",
        "packages/web": "acme-web",
    }
    deps = query(tmp_path)
    assert deps["consumer:build"] == ["acme-utils:build", "other-utils:build"]
    assert deps["web:build"] == ["acme-web:build"]


def test_an_existing_haz_yml_is_kept_and_its_name_used_in_deps(tmp_path: Path) -> None:
    done = init(tmp_path, EXISTING)
    assert (tmp_path / "packages/lib/haz.yml").read_text() == EXISTING["packages/lib/haz.yml"]
    assert "packages/lib/haz.yml" not in done.stderr.split("would write:")[1]
    assert query(tmp_path)["app:build"] == ["corelib:build"]


def test_build_deps_skip_dependencies_without_a_build(tmp_path: Path) -> None:
    init(
        tmp_path,
        {
            "package.json": pkg(workspaces=["p/*"]),
            "p/config/package.json": pkg("@a/config", scripts={"lint": "eslint"}),
            "p/types/package.json": pkg("@a/types"),
            "p/app/package.json": pkg(
                "@a/app",
                scripts={"build": "tsc", "test": "vitest"},
                dependencies={"@a/config": "workspace:*", "@a/types": "workspace:*"},
            ),
        },
    )
    assert query(tmp_path) == {"app:build": [], "app:test": [], "config:lint": []}


def test_generated_files_point_at_haz_documentation_not_readme(tmp_path: Path) -> None:
    done = init(tmp_path, {**NPM_OBJECT_FORM, "tools/Makefile": "all:\n"})
    for rel in [*done.projects(), ".haz/workspace.yml"]:
        path = tmp_path / rel if rel.endswith(".yml") else tmp_path / rel / "haz.yml"
        text = path.read_text()
        assert "README" not in text
        assert "docs/configuration.md in the haz remote repository" in text


def test_a_javascript_workspace_root_with_a_makefile_imports_no_root_scripts(
    tmp_path: Path,
) -> None:
    done = init(tmp_path, {**NPM_WORKSPACES, "Makefile": "all:\n"})
    assert done.projects()[0] == "."
    assert done.tasks(".") == {}  # "turbo run build" would rebuild every package


def test_without_yes_and_without_a_terminal_it_lists_and_exits_2(tmp_path: Path) -> None:
    write_files(tmp_path, C_LIBRARY)
    result = haz("init", cwd=tmp_path)
    assert result.returncode == 2
    assert "skipped: third_party/unity: looks vendored/fixture" in result.stderr
    assert "  lib/haz.yml\n" in result.stderr
    assert "  .haz/workspace.yml\n" in result.stderr
    assert "re-run with --yes" in result.stderr
    assert not (tmp_path / ".haz").exists()
    assert not (tmp_path / "lib" / "haz.yml").exists()


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm on PATH")
def test_generated_npm_workspace_runs_in_dependency_order_and_replays(tmp_path: Path) -> None:
    """What `haz init` wrote runs for real: npm on the passed-through PATH, deps first."""
    log = tmp_path / "order.log"
    build = (
        "node -e \"const fs=require('fs');fs.mkdirSync('dist',{recursive:true});"
        "fs.writeFileSync('dist/index.js','built');"
        f"fs.appendFileSync('{log}',require('./package.json').name+'\\\\n')\""
    )
    init(
        tmp_path / "repo",
        {
            "package.json": pkg(private=True, workspaces=["packages/*"]),
            "package-lock.json": "{}",
            "packages/ui/package.json": pkg(
                "@acme/ui", main="dist/index.js", scripts={"build": build, "postinstall": "x"}
            ),
            "packages/web/package.json": pkg(
                "@acme/web",
                main="dist/index.js",
                scripts={"build": build},
                dependencies={"@acme/ui": "workspace:*"},
            ),
        },
    )
    root = tmp_path / "repo"
    first = haz("run", "web:build", "-j", "2", cwd=root)
    assert first.returncode == 0, first.stderr
    assert log.read_text().split() == ["@acme/ui", "@acme/web"]
    (root / "packages/ui/dist/index.js").unlink()
    second = haz("run", "web:build", cwd=root)
    assert second.returncode == 0, second.stderr
    assert log.read_text().split() == ["@acme/ui", "@acme/web"]  # both restored, none ran
    assert (root / "packages/ui/dist/index.js").read_text() == "built"
