"""The task graph: nodes, edges, validation and closures.

Spec coverage:
* DAG-001..006 — overlay merge (via ``_merge``).
* DAG-007 — nodes are :class:`TaskId`; every mapping and returned tuple is in canonical order.
* DAG-008, DAG-009 — hard and soft edges resolved from the task's project (REF-001..008).
* DAG-010 — the same task reached from ``deps`` and ``weakDeps`` is an error.
* DAG-012 — a task reaching itself through a reference is an error.
* DAG-013 — producer edges by literal prefix (``_producers``); default inputs create none.
* PATH-001..016 — :class:`~hazremote.domain.model.ProjectFiles` of a task without ``inputs``.
* DAG-014 — cycles of two or more tasks over hard+soft+producer edges (``_cycles``).
* DAG-016 — equal literal outputs are an error; overlapping patterns a warning and output peers.
* DAG-011 — :func:`build_graph` collects every diagnostic above and raises them together.
* EXEC-001 — :meth:`TaskGraph.run_set`: targets plus transitive hard predecessors.
Out of scope: loading YAML (``hazremote.config``), overlaps between actual files (EXEC-020,
:mod:`hazremote.execute.claims`), readiness and scheduling (``hazremote.execute``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from types import MappingProxyType

from hazremote.domain.model import ProjectFiles, RefEntry, Task, TaskSpec, Workspace
from hazremote.domain.patterns import PathPattern, parse_pattern
from hazremote.domain.refs import RefKind, TaskId, TaskRef
from hazremote.errors import Diagnostic, GraphError, PatternError, ReferenceError_, Severity
from hazremote.graph._cycles import cyclic_components
from hazremote.graph._merge import Attached, attach_tasks
from hazremote.graph._producers import OutputIndex
from hazremote.graph._resolve import RefIndex

__all__ = ["TaskGraph", "build_graph"]

_Edges = Mapping[TaskId, tuple[TaskId, ...]]


def _closure(roots: Iterable[TaskId], edges: _Edges, known: Mapping[TaskId, Task]) -> list[TaskId]:
    seen: set[TaskId] = set()
    pending: list[TaskId] = []
    for root in roots:
        if root not in known:
            raise ReferenceError_(f"unknown task {root}")
        if root not in seen:
            seen.add(root)
            pending.append(root)
    while pending:
        for neighbour in edges.get(pending.pop(), ()):
            if neighbour not in seen:
                seen.add(neighbour)
                pending.append(neighbour)
    return sorted(seen)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskGraph:
    """A validated task graph (build it with :func:`build_graph`).

    Attributes:
        tasks: Every task, in canonical order (DAG-007).
        hard: Task → its ``deps`` predecessors (DAG-008), canonical order.
        soft: Task → its ``weakDeps`` predecessors (DAG-009), canonical order.
        producers: Consumer → tasks with an output overlapping one of its inputs (DAG-013),
            canonical order; may include the consumer itself.
        tags: Project name → its tags, for every project (including projects with no task).
        output_peers: Task → the other tasks with an output pattern overlapping one of its
            own by literal prefix (DAG-016), canonical order; symmetric. Only these can
            materialise a path its output patterns match (EXEC-020).
        warnings: Every configuration warning of the graph (:attr:`Severity.WARNING`
            diagnostics, sorted like errors); a command shows those concerning its tasks
            (:meth:`warnings_for`).
    """

    tasks: Mapping[TaskId, Task]
    hard: _Edges
    soft: _Edges
    producers: _Edges
    tags: Mapping[str, tuple[str, ...]]
    output_peers: _Edges = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[Diagnostic, ...] = ()
    _dependants: _Edges = field(init=False, repr=False, compare=False)
    _refs: RefIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dependants: dict[TaskId, list[TaskId]] = {}
        for task in self.tasks:  # canonical order, so every list comes out sorted
            for predecessor in self.hard.get(task, ()):
                dependants.setdefault(predecessor, []).append(task)
        frozen = {task: tuple(found) for task, found in dependants.items()}
        object.__setattr__(self, "_dependants", MappingProxyType(frozen))
        object.__setattr__(self, "_refs", RefIndex(task_ids=self.tasks, tags=self.tags))

    def warnings_for(self, tasks: Iterable[TaskId]) -> tuple[Diagnostic, ...]:
        """The warnings concerning any of ``tasks`` (or no task at all), in order."""
        wanted = set(tasks)
        return tuple(w for w in self.warnings if not w.tasks or not wanted.isdisjoint(w.tasks))

    def hard_dependants(self, task: TaskId) -> tuple[TaskId, ...]:
        """Tasks that list ``task`` in their ``deps`` (direct only), canonical order."""
        return self._dependants.get(task, ())

    def resolve(self, ref: TaskRef, *, bearing: str | None) -> tuple[TaskId, ...]:
        """Resolve a (command-line) reference relative to the ``bearing`` project (REF).

        Raises:
            ReferenceError_: naming ``ref`` when it resolves to nothing, or when it is a
                ``~:task`` reference and there is no bearing project.
        """
        if ref.kind is RefKind.SAME and bearing is None:
            raise ReferenceError_(
                f"task reference '{ref}' needs a bearing project, but the working directory is "
                f"not inside one; write project:{ref.task} or ^:{ref.task}"
            )
        found, reason = self._refs.resolve(ref, bearing=bearing)
        if not found:
            raise ReferenceError_(f"task reference '{ref}' resolves to nothing: {reason}")
        return found

    def run_set(self, roots: Iterable[TaskId]) -> tuple[TaskId, ...]:
        """EXEC-001: ``roots`` plus every transitive hard predecessor, canonical order.

        Raises:
            ReferenceError_: when a root is not a task of the graph.
        """
        return tuple(_closure(roots, self.hard, self.tasks))

    def dependants_closure(self, roots: Iterable[TaskId]) -> tuple[TaskId, ...]:
        """``roots`` plus every transitive hard dependant, canonical order.

        Raises:
            ReferenceError_: when a root is not a task of the graph.
        """
        return tuple(_closure(roots, self._dependants, self.tasks))


def _nested_dirs(project_dir: str, dirs: Sequence[str]) -> tuple[str, ...]:
    """The outermost project directories strictly below ``project_dir`` (``dirs`` sorted),
    in the order of their paths with a trailing ``/`` (the order input resolution cuts them
    out of a sorted listing).

    Directories below ``project_dir`` are a contiguous run of the sorted list, so this costs
    a bisection plus the run, not a scan of every project.
    """
    start = f"{project_dir}/" if project_dir else ""
    lo = bisect.bisect_left(dirs, start)
    found: set[str] = set()
    for other in dirs[lo:]:
        if not other.startswith(start):
            break
        if other == project_dir:
            continue
        ancestor = other
        while "/" in ancestor and ancestor not in found:
            ancestor = ancestor[: ancestor.rfind("/")]
        if ancestor not in found:  # not inside a nested project already excluded
            found.add(other)
    return tuple(sorted(found, key=lambda d: d + "/"))


class _Builder:
    """Builds tasks and edges for one :func:`build_graph` call, collecting every diagnostic."""

    def __init__(self, project_dirs: Sequence[str] = ()) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self._dirs = sorted(set(project_dirs))
        self._project_files: dict[str, ProjectFiles] = {}

    def project_files(self, project_dir: str) -> ProjectFiles:
        """PATH: the default inputs of a task of the project at ``project_dir`` (memoised)."""
        known = self._project_files.get(project_dir)
        if known is None:
            known = ProjectFiles(dir=project_dir, nested=_nested_dirs(project_dir, self._dirs))
            self._project_files[project_dir] = known
        return known

    def report(self, *, origin_file: str, key_path: str, line: int | None, message: str) -> None:
        self.diagnostics.append(
            Diagnostic(file=origin_file, key_path=key_path, line=line, message=message)
        )

    def warn(self, *, task: Task, key_path: str, message: str, tasks: Iterable[TaskId]) -> None:
        """A warning at ``key_path`` (below the task's own key) of ``task``'s definition."""
        origin = task.spec.origin
        self.warnings.append(
            Diagnostic(
                file=origin.file,
                key_path=f"{origin.key_path}.{key_path}",
                line=origin.line,
                message=message,
                severity=Severity.WARNING,
                tasks=tuple(sorted(set(tasks))),
            )
        )

    def patterns(
        self, spec: TaskSpec, project_dir: str, key: str, texts: tuple[str, ...]
    ) -> tuple[PathPattern, ...]:
        parsed: list[PathPattern] = []
        for i, text in enumerate(texts):
            try:
                parsed.append(
                    parse_pattern(text, project_dir=project_dir, allow_negation=key == "inputs")
                )
            except PatternError as err:
                origin = spec.origin
                self.report(
                    origin_file=origin.file,
                    key_path=f"{origin.key_path}.{key}[{i}]",
                    line=origin.line,
                    message=str(err),
                )
        return tuple(parsed)

    def make_task(self, task_id: TaskId, attached: Attached) -> Task:
        spec, project_dir = attached.spec, attached.project.dir
        return Task(
            id=task_id,
            project_dir=project_dir,
            spec=spec,
            inputs=self.patterns(spec, project_dir, "inputs", spec.inputs or ()),
            outputs=self.patterns(spec, project_dir, "outputs", spec.outputs),
            default_inputs=self.project_files(project_dir) if spec.inputs is None else None,
        )

    def edges(
        self, task_id: TaskId, entries: tuple[RefEntry, ...], refs: RefIndex
    ) -> dict[TaskId, RefEntry]:
        """Resolve ``deps`` or ``weakDeps``: predecessor → the first entry that named it."""
        found: dict[TaskId, RefEntry] = {}
        for entry in entries:
            origin = entry.origin
            ids, reason = refs.resolve(entry.ref, bearing=task_id.project)
            if not ids:
                self.report(
                    origin_file=origin.file,
                    key_path=origin.key_path,
                    line=origin.line,
                    message=f"task reference '{entry.ref}' of {task_id} resolves to nothing: "
                    f"{reason}",
                )
                continue
            for predecessor in ids:
                if predecessor == task_id:
                    self.report(
                        origin_file=origin.file,
                        key_path=origin.key_path,
                        line=origin.line,
                        message=_self_reference(task_id, entry.ref),
                    )
                else:
                    found.setdefault(predecessor, entry)
        return found

    def literal_collisions(self, tasks: Mapping[TaskId, Task]) -> None:
        declared: dict[str, dict[TaskId, int]] = {}
        for task_id, task in tasks.items():
            for i, pattern in enumerate(task.outputs):
                if not pattern.glob:
                    declared.setdefault(pattern.absolute, {}).setdefault(task_id, i)
        for path, owners in declared.items():
            if len(owners) < 2:
                continue
            first, index = next(iter(owners.items()))  # canonical order: the first declarer
            origin = tasks[first].spec.origin
            self.report(
                origin_file=origin.file,
                key_path=f"{origin.key_path}.outputs[{index}]",
                line=origin.line,
                message=f"output '{path}' is declared by several tasks: "
                + ", ".join(str(t) for t in owners),
            )

    def output_overlaps(
        self, tasks: Mapping[TaskId, Task], index: OutputIndex
    ) -> dict[TaskId, set[TaskId]]:
        """DAG-016: warn once per pair of overlapping output patterns of two tasks (equal
        literals are :meth:`literal_collisions`' errors); return every task's peers.

        Each output is looked up in the literal-prefix index, so the cost is the depth of the
        patterns plus the overlaps found, not the number of pairs of tasks.
        """
        peers: dict[TaskId, set[TaskId]] = {}
        for task_id, task in tasks.items():
            for j, pattern in enumerate(task.outputs):
                for other, theirs in index.overlapping_outputs(pattern):
                    if other == task_id:
                        continue
                    peers.setdefault(task_id, set()).add(other)
                    # Each pair once, at the task later in canonical order.
                    if other > task_id or not (pattern.glob or theirs.glob):
                        continue
                    self.warn(
                        task=task,
                        key_path=f"outputs[{j}]",
                        message=f"outputs of {other} and {task_id} may overlap: "
                        f"'{theirs.text}' and '{pattern.text}' can match the same file; a run "
                        "in which both tasks materialise one file fails",
                        tasks=(other, task_id),
                    )
        return peers


def _self_reference(task_id: TaskId, ref: TaskRef) -> str:
    message = f"task {task_id} depends on itself through '{ref}'"
    hints = {RefKind.ALL: f"^~:{ref.task}", RefKind.TAG: f"[{ref.tag}]~:{ref.task}"}
    if ref.kind in hints:
        message += f"; write {hints[ref.kind]} to leave out its own project"
    return message


def _freeze(edges: Mapping[TaskId, Iterable[TaskId]]) -> _Edges:
    return MappingProxyType({task: tuple(sorted(found)) for task, found in edges.items()})


def build_graph(workspace: Workspace) -> TaskGraph:
    """Merge overlays, resolve references, add producer edges and validate (SPEC §2).

    Raises:
        GraphError: carrying every diagnostic found (DAG-011), sorted by file and line.
    """
    builder = _Builder(project_dirs=[project.dir for project in workspace.projects])
    attached, collisions = attach_tasks(workspace)
    builder.diagnostics.extend(collisions)
    tasks = {task_id: builder.make_task(task_id, attached[task_id]) for task_id in sorted(attached)}
    tags = {
        project.name: project.tags for project in sorted(workspace.projects, key=lambda p: p.name)
    }
    refs = RefIndex(task_ids=tasks, tags=tags)

    hard: dict[TaskId, Iterable[TaskId]] = {}
    soft: dict[TaskId, Iterable[TaskId]] = {}
    for task_id, task in tasks.items():
        hard_found = builder.edges(task_id, task.spec.deps, refs)
        soft_found = builder.edges(task_id, task.spec.weak_deps, refs)
        for both in sorted(hard_found.keys() & soft_found.keys()):
            origin = soft_found[both].origin
            builder.report(
                origin_file=origin.file,
                key_path=origin.key_path,
                line=origin.line,
                message=f"{both} is in both deps and weakDeps of {task_id}; keep one",
            )
            del soft_found[both]
        hard[task_id] = hard_found
        soft[task_id] = soft_found

    outputs = OutputIndex()
    for task_id, task in tasks.items():
        for pattern in task.outputs:
            outputs.add(pattern, task_id)
    producers = {
        task_id: set(
            chain.from_iterable(outputs.overlapping(p) for p in task.inputs if not p.negated)
        )
        for task_id, task in tasks.items()
    }
    builder.literal_collisions(tasks)
    peers = builder.output_overlaps(tasks, outputs)

    graph = TaskGraph(
        tasks=MappingProxyType(tasks),
        hard=_freeze(hard),
        soft=_freeze(soft),
        producers=_freeze(producers),
        tags=MappingProxyType(tags),
        output_peers=_freeze(peers),
        warnings=tuple(sorted(set(builder.warnings), key=Diagnostic.sort_key)),
    )
    all_edges = {
        task_id: (*graph.hard[task_id], *graph.soft[task_id], *graph.producers[task_id])
        for task_id in tasks
    }
    for component in cyclic_components(tasks, all_edges):
        builder.report(
            origin_file="",
            key_path="",
            line=None,
            message="dependency cycle (over deps, weakDeps and output→input producer edges) "
            "among " + ", ".join(str(t) for t in component),
        )
    if builder.diagnostics:
        unique = set(builder.diagnostics)
        raise GraphError(sorted(unique, key=Diagnostic.sort_key))
    return graph
