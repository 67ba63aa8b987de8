#!/usr/bin/env python3
"""A real single-node OpenSearch for tests and benchmarks, assembled from Maven Central.

    python scripts/opensearch_node.py start [--json]   # prints the URL (idempotent)
    python scripts/opensearch_node.py stop             # stops it, removes its state
    python scripts/opensearch_node.py status | fetch

``make opensearch`` / ``make opensearch-stop`` call it. Standard library only, so
it runs before (or without) the project's virtualenv.

What it does (docs/opensearch.md, "A real node for tests"):

1. **fetch** — with ``mvn``, into a cache outside the repository
   (``~/.cache/trove/opensearch/<version>``; ``TROVE_OPENSEARCH_CACHE``):
   the ``integ-test-zip`` distribution (no bundled JDK, only the
   ``transport-netty4`` module), the k-NN and neural-search plugin zips, and the
   jars of the modules a full distribution carries that Trove needs:
   ``lang-painless`` (k-NN extends it: the plugin installer refuses k-NN without
   it), ``analysis-common`` (the ``english`` analyzer) and ``reindex``
   (``_delete_by_query``, ``_update_by_query``, ``_reindex``). Each module
   directory gets the jar, its runtime dependencies (less those the node's
   ``lib/`` already has: a duplicate is "jar hell") and a
   ``plugin-descriptor.properties``. Then ``opensearch-plugin install`` puts the
   two plugins in. The assembled node is cached; once filled, nothing is fetched.
2. **start** — copies the assembled node into a state folder (``<tmp>/trove-opensearch``;
   ``--state-dir``/``TROVE_OPENSEARCH_STATE``), writes single-node settings with
   free loopback ports, and starts it with a 1 GB heap. OpenSearch refuses to run
   as root, so as root it runs as the system user ``trove-opensearch`` (created
   with ``useradd --system`` when missing) and the state folder is theirs. It
   waits (bounded, ``--timeout``) for yellow health and checks both plugins loaded.
3. **stop** — SIGTERM (then SIGKILL after 30 s) to the node's pid, and removes
   the state folder: no leftovers, root-owned or otherwise.

Every failure names the step and, for a download, the Maven coordinates.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VERSION = "2.19.1"
NODE_USER = "trove-opensearch"
TEMURIN_25 = Path("/usr/lib/jvm/temurin-25-jdk-amd64")
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
STOP_GRACE_S = 30.0
REQUIRED_PLUGINS = ("opensearch-knn", "opensearch-neural-search")


class StepError(RuntimeError):
    """A named step failed; the message says which and what to do."""

    def __init__(self, step: str, detail: str):
        super().__init__(f"opensearch: {step} failed: {detail}")
        self.step = step


@dataclass(frozen=True)
class Module:
    """A module of the full distribution, rebuilt from its Maven jar."""

    name: str
    artifact: str  # org.opensearch.plugin:<artifact>:<version>
    classnames: tuple[str, ...]  # candidates; the one present in the jar is used
    description: str
    extended: tuple[str, ...] = ()
    policy: str = ""


PAINLESS_POLICY = textwrap.dedent(
    """\
    grant {
      // generates and loads the compiled scripts' classes
      permission java.lang.RuntimePermission "createClassLoader";
      permission java.lang.RuntimePermission "getClassLoader";
    };
    """
)

MODULES: tuple[Module, ...] = (
    Module(
        "lang-painless",
        "lang-painless",
        ("org.opensearch.painless.PainlessModulePlugin", "org.opensearch.painless.PainlessPlugin"),
        "An easy, safe and fast scripting language for OpenSearch",
        policy=PAINLESS_POLICY,
    ),
    Module(
        "analysis-common",
        "analysis-common",
        (
            "org.opensearch.analysis.common.CommonAnalysisModulePlugin",
            "org.opensearch.analysis.common.CommonAnalysisPlugin",
        ),
        "Adds analysis components (the language analyzers) to OpenSearch",
        extended=("lang-painless",),
    ),
    Module(
        "reindex",
        "reindex-client",
        (
            "org.opensearch.index.reindex.ReindexModulePlugin",
            "org.opensearch.index.reindex.ReindexPlugin",
        ),
        "The Reindex module: _reindex, _update_by_query and _delete_by_query",
    ),
)


@dataclass(frozen=True)
class Line:
    """One OpenSearch version: its plugin versions and the Java it runs on."""

    version: str
    java_home: Path
    knn: str = ""
    neural: str = ""
    modules: tuple[Module, ...] = field(default=MODULES)

    @property
    def plugin_version(self) -> str:
        return f"{self.version}.0"

    @property
    def core(self) -> str:
        return f"org.opensearch.distribution.integ-test-zip:opensearch:{self.version}:zip"

    @property
    def plugins(self) -> tuple[str, ...]:
        v = self.plugin_version
        return (
            f"org.opensearch.plugin:opensearch-knn:{v}:zip",
            f"org.opensearch.plugin:neural-search:{v}:zip",
        )


def default_java_home() -> Path:
    """``JAVA_HOME``, else the directory of the ``java`` on PATH."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    if not java:
        return Path("/nonexistent-java")
    return Path(os.path.realpath(java)).parent.parent


def line_for(version: str) -> Line:
    """2.x runs on Java 17 (it still installs a SecurityManager, which JDK 24+ removed);
    3.x needs Java 21+: Temurin 25, or ``TROVE_OPENSEARCH_JAVA_HOME``."""
    override = os.environ.get("TROVE_OPENSEARCH_JAVA_HOME")
    if override:
        java_home = Path(override)
    elif version.startswith("2."):
        java_home = default_java_home()
    else:
        java_home = TEMURIN_25
    return Line(version=version, java_home=java_home)


# ---------------------------------------------------------------- fetch and assemble


def run_step(
    step: str, argv: list[str], *, cwd: Path | None = None, env: dict | None = None
) -> str:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise StepError(step, f"{argv[0]} is not installed ({exc})") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise StepError(step, f"`{' '.join(argv[:3])} …` exited {proc.returncode}:\n{tail}")
    return proc.stdout


def maven_env(java_home: Path) -> dict[str, str]:
    # Maven itself runs on the default JDK; the node's JDK is chosen separately.
    return {**os.environ, "MAVEN_OPTS": os.environ.get("MAVEN_OPTS", "-Xmx512m")}


def require_mvn(what: str) -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise StepError(
            f"fetching {what}",
            "Maven (`mvn`) is not installed and the artifact is not cached; install Maven "
            "(apt-get install maven) or fill the cache on a machine that has it",
        )
    return mvn


def fetch_artifact(coords: str, dest: Path) -> Path:
    """One artifact (``group:artifact:version[:type]``) into ``dest``; cached."""
    _group, artifact, version, *rest = coords.split(":")
    ext = rest[0] if rest else "jar"
    target = dest / f"{artifact}-{version}.{ext}"
    if target.is_file():
        return target
    mvn = require_mvn(coords)
    dest.mkdir(parents=True, exist_ok=True)
    run_step(
        f"fetching {coords} from Maven Central",
        [
            mvn, "-B", "-q", f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={coords}", f"-DoutputDirectory={dest}",
        ],
    )  # fmt: skip
    if not target.is_file():
        raise StepError(f"fetching {coords}", f"Maven reported success but {target} is missing")
    return target


def fetch_with_dependencies(coords: str, dest: Path) -> list[Path]:
    """A jar and its runtime dependencies, less OpenSearch core (the node has it)."""
    marker = dest / ".complete"
    if marker.is_file():
        return sorted(dest.glob("*.jar"))
    mvn = require_mvn(coords)
    group, artifact, version = coords.split(":")
    with tempfile.TemporaryDirectory(prefix="trove-os-pom-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(
            f"""<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>trove.local</groupId><artifactId>module-{artifact}</artifactId><version>1</version>
<dependencies><dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>
<version>{version}</version><exclusions><exclusion><groupId>org.opensearch</groupId>
<artifactId>opensearch</artifactId></exclusion></exclusions></dependency></dependencies></project>
"""
        )
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        run_step(
            f"fetching {coords} and its runtime dependencies from Maven Central",
            [
                mvn, "-B", "-q", "-f", str(pom), f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={dest}",
            ],
        )  # fmt: skip
    marker.touch()
    return sorted(dest.glob("*.jar"))


def artifact_name(jar: Path) -> str:
    """``netty-common-4.1.118.Final.jar`` -> ``netty-common``."""
    parts = jar.stem.split("-")
    for i, part in enumerate(parts):
        if part[:1].isdigit():
            return "-".join(parts[:i])
    return jar.stem


def build_module(node: Path, line: Line, module: Module, cache: Path) -> None:
    jars = fetch_with_dependencies(
        f"org.opensearch.plugin:{module.artifact}:{line.version}", cache / "modules" / module.name
    )
    in_lib = {artifact_name(j) for j in (node / "lib").glob("*.jar")}
    target = node / "modules" / module.name
    target.mkdir(parents=True)
    main_jar = None
    for jar in jars:
        if artifact_name(jar) in in_lib:
            continue  # the node's lib/ has it already: a second copy is jar hell
        shutil.copy2(jar, target / jar.name)
        if artifact_name(jar) == module.artifact:
            main_jar = jar
    if main_jar is None:
        raise StepError(f"building module {module.name}", f"no {module.artifact} jar among {jars}")
    with zipfile.ZipFile(main_jar) as zf:
        names = set(zf.namelist())
    classname = next(
        (c for c in module.classnames if c.replace(".", "/") + ".class" in names), None
    )
    if classname is None:
        raise StepError(
            f"building module {module.name}",
            f"none of {module.classnames} in {main_jar.name}; add this version's plugin class",
        )
    java_major = "21" if not line.version.startswith("2.") else "17"
    descriptor = [
        f"description={module.description}",
        f"version={line.version}",
        f"name={module.name}",
        f"classname={classname}",
        f"java.version={java_major}",
        f"opensearch.version={line.version}",
    ]
    if module.extended:
        descriptor.append(f"extended.plugins={','.join(module.extended)}")
    (target / "plugin-descriptor.properties").write_text("\n".join(descriptor) + "\n")
    if module.policy:
        (target / "plugin-security.policy").write_text(module.policy)


def node_env(line: Line, heap: str = "1g") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSEARCH_")}
    env["OPENSEARCH_JAVA_HOME"] = str(line.java_home)
    env["OPENSEARCH_JAVA_OPTS"] = f"-Xms{heap} -Xmx{heap}"
    return env


def check_java(line: Line) -> None:
    java = line.java_home / "bin" / "java"
    if not java.is_file():
        need = "17" if line.version.startswith("2.") else "21 or later (Temurin 25)"
        raise StepError(
            "finding Java",
            f"OpenSearch {line.version} needs Java {need}; no {java} "
            "(set TROVE_OPENSEARCH_JAVA_HOME to a JDK)",
        )


def assemble(line: Line, cache: Path) -> Path:
    """The node with modules and plugins, under ``cache/<version>/node``; cached."""
    root = cache / line.version
    node = root / "node"
    if (node / ".assembled").is_file():
        return node
    check_java(line)
    artifacts = root / "artifacts"
    core_zip = fetch_artifact(line.core, artifacts)
    plugin_zips = [fetch_artifact(p, artifacts) for p in line.plugins]
    staging = root / "node.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(core_zip) as zf:
        zf.extractall(staging)
    (top,) = list(staging.iterdir())
    for script in (top / "bin").iterdir():
        script.chmod(0o755)
    for module in line.modules:
        build_module(top, line, module, root)
    for plugin_zip in plugin_zips:
        run_step(
            f"installing plugin {plugin_zip.name}",
            [str(top / "bin" / "opensearch-plugin"), "install", "--batch", plugin_zip.as_uri()],
            env=node_env(line),
        )
    (top / ".assembled").write_text(json.dumps({"version": line.version}) + "\n")
    shutil.rmtree(node, ignore_errors=True)
    top.rename(node)
    shutil.rmtree(staging, ignore_errors=True)
    return node


# ---------------------------------------------------------------- start, status, stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_node_user() -> tuple[int, int] | None:
    """``(uid, gid)`` to run as, or None when not root (run as the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(NODE_USER)
    except KeyError:
        run_step(
            f"creating the system user {NODE_USER} (OpenSearch refuses to run as root)",
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--shell", "/usr/sbin/nologin", NODE_USER],
        )  # fmt: skip
        entry = pwd.getpwnam(NODE_USER)
    return entry.pw_uid, entry.pw_gid


def chown_tree(path: Path, ids: tuple[int, int]) -> None:
    uid, gid = ids
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def http_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_info(state: Path) -> dict | None:
    try:
        return json.loads((state / "node.json").read_text())
    except (OSError, ValueError):
        return None


def read_pid(state: Path) -> int | None:
    try:
        return int((state / "node.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def healthy(url: str) -> bool:
    try:
        health = http_json(f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s", 5.0)
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(health, dict) and health.get("status") in ("yellow", "green")


def log_tail(state: Path, lines: int = 25) -> str:
    out = []
    for name in ("launcher.log", "logs/trove-test.log"):
        path = state / name
        if path.is_file():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(out) or "(no log written)"


def start(line: Line, cache: Path, state: Path, timeout: float, heap: str) -> dict:
    info = read_info(state)
    pid = read_pid(state)
    if info and pid and pid_alive(pid) and healthy(info["url"]):
        return {**info, "already_running": True}
    if state.exists():
        stop(state, quiet=True)  # a stale or half-started node: clear it first
    node = assemble(line, cache)
    check_java(line)
    ids = ensure_node_user()
    state.mkdir(parents=True)
    home = state / "node"
    shutil.copytree(node, home, symlinks=True)
    http_port, transport_port = free_port(), free_port()
    (home / "config" / "opensearch.yml").write_text(
        textwrap.dedent(
            f"""\
            cluster.name: trove-test
            node.name: trove-test-node
            network.host: 127.0.0.1
            http.port: {http_port}
            transport.port: {transport_port}
            discovery.type: single-node
            cluster.routing.allocation.disk.threshold_enabled: false
            path.data: {state / "data"}
            path.logs: {state / "logs"}
            """
        )
    )
    (state / "data").mkdir()
    (state / "logs").mkdir()
    if ids is not None:
        chown_tree(state, ids)
    url = f"http://127.0.0.1:{http_port}"
    argv = [str(home / "bin" / "opensearch"), "-d", "-p", str(state / "node.pid")]
    if ids is not None:
        argv = ["runuser", "-u", NODE_USER, "--", *argv]
    with open(state / "launcher.log", "wb") as log_file:
        launched = subprocess.run(
            argv, env=node_env(line, heap), stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    if launched.returncode != 0:
        detail = log_tail(state)
        stop(state, quiet=True)
        raise StepError(
            "starting the node", f"bin/opensearch exited {launched.returncode}\n{detail}"
        )
    deadline = time.monotonic() + timeout
    while not healthy(url):
        pid = read_pid(state)
        if pid is not None and not pid_alive(pid):
            detail = log_tail(state)
            stop(state, quiet=True)
            raise StepError("waiting for the node", f"the node exited during startup\n{detail}")
        if time.monotonic() > deadline:
            detail = log_tail(state)
            stop(state, quiet=True)
            raise StepError(
                "waiting for the node",
                f"not healthy (yellow) within {timeout:.0f} s at {url}\n{detail}",
            )
        time.sleep(0.5)
    loaded = {p.get("component") for p in http_json(f"{url}/_cat/plugins?format=json")}  # type: ignore[union-attr]
    missing = [p for p in REQUIRED_PLUGINS if p not in loaded]
    if missing:
        stop(state, quiet=True)
        raise StepError("checking plugins", f"{missing} not loaded (loaded: {sorted(loaded)})")
    info = {
        "url": url,
        "version": line.version,
        "pid": read_pid(state),
        "state_dir": str(state),
        "java_home": str(line.java_home),
        "heap": heap,
    }
    (state / "node.json").write_text(json.dumps(info) + "\n")
    return {**info, "already_running": False}


def stop(state: Path, quiet: bool = False) -> bool:
    """Stop the node whose state is in ``state`` and remove the folder; True if one ran."""
    pid = read_pid(state)
    ran = False
    if pid is not None and pid_alive(pid):
        ran = True
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
    shutil.rmtree(state, ignore_errors=True)
    if not quiet:
        print("opensearch: stopped" if ran else "opensearch: no node was running", file=sys.stderr)
    return ran


# ---------------------------------------------------------------- command line


def default_cache() -> Path:
    base = os.environ.get("TROVE_OPENSEARCH_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "trove" / "opensearch"


def default_state() -> Path:
    return Path(
        os.environ.get("TROVE_OPENSEARCH_STATE") or Path(tempfile.gettempdir()) / "trove-opensearch"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "fetch"])
    parser.add_argument(
        "--version", default=os.environ.get("TROVE_OPENSEARCH_VERSION", DEFAULT_VERSION)
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=180.0, help="health wait, seconds")
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--json", action="store_true", help="print the node's details as JSON")
    args = parser.parse_args(argv)
    cache = (args.cache_dir or default_cache()).resolve()
    state = (args.state_dir or default_state()).resolve()
    line = line_for(args.version)
    try:
        if args.command == "fetch":
            node = assemble(line, cache)
            print(node)
        elif args.command == "start":
            info = start(line, cache, state, args.timeout, args.heap)
            if args.json:
                print(json.dumps(info))
            else:
                verb = "already running" if info["already_running"] else "started"
                print(
                    f"opensearch {info['version']} {verb} (state in {state}); "
                    "stop with `make opensearch-stop`",
                    file=sys.stderr,
                )
                print(info["url"])
        elif args.command == "stop":
            stop(state)
        else:
            info = read_info(state)
            pid = read_pid(state)
            up = bool(info and pid and pid_alive(pid) and healthy(info["url"]))
            print(
                json.dumps({**(info or {}), "running": up})
                if args.json
                else (info["url"] if up and info else "not running")
            )
            return 0 if up else 3
    except StepError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
