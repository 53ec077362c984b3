"""Run one workflow job so that it dies with Snakemake and a failed redo never loses its last good outputs.

    python -m gluerl.job --keep results/eval/.../rte.json --keep results/eval/.../rte.predictions.jsonl \
        --inputs results/models/m data/prompts/0shot/rte/validation.jsonl -- python scripts/evaluate.py ...

**Dies with Snakemake.** The command runs as a child; a thread watches the process that started
the job (the first ancestor that is not a shell: Snakemake, or ``$GLUERL_WATCH_PID``). When it is
gone (``kill -9`` of Snakemake, a lost session), the child and everything it started are killed
at once, before they can write an output (every output is written at the end, atomically), and
the wrapper exits 1 without keeping anything. If the wrapper itself is killed, the child gets
SIGKILL from the kernel (``PR_SET_PDEATHSIG`` on Linux). SIGTERM, SIGINT and SIGHUP are passed on.

**Last good outputs.** Snakemake deletes a job's outputs before it redoes the job, and again when
the redo fails: a failed re-evaluation would leave the user with nothing. So after the command
succeeds, the kept outputs are copied to ``.gluerl/last-good/<outputs digest>/`` with the job's
key: its command line, ``$GLUERL_RULE``, each input's content (size and modification time above
256 MiB), and a digest of the code (``gluerl`` and ``scripts/``). A failed run leaves that copy alone. When the same job (same
key) runs again, e.g. after going back to the settings that worked, its outputs are restored from
the copy in a moment instead of being recomputed. ``GLUERL_NO_RESTORE=1`` always runs the command.
A folder in ``--keep`` is kept without its ``checkpoints/`` (training's resumable state).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

STORE = Path(".gluerl") / "last-good"
SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "time", "env", "nice", "timeout"}
POLL_SECONDS = 0.5


# ---- process tree (Linux /proc; elsewhere only the parent check) ----
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, ppid, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # a zombie has exited
        return None
    return comm, int(fields[1]), int(fields[19])


def job_owner() -> tuple[int, int | None]:
    """(pid, start time) of the process that started this job: ``$GLUERL_WATCH_PID`` or the first
    ancestor that is not a shell (Snakemake runs jobs through ``bash -c``)."""
    if os.environ.get("GLUERL_WATCH_PID"):
        pid = int(os.environ["GLUERL_WATCH_PID"])
        st = _stat(pid)
        return pid, st[2] if st else None
    pid = os.getppid()
    for _ in range(8):
        st = _stat(pid)
        if st is None:
            return pid, None
        comm, ppid, start = st
        if comm not in SHELLS or ppid <= 1:
            return pid, start
        pid = ppid
    return pid, _stat(pid)[2] if _stat(pid) else None


def alive(pid: int, start: int | None) -> bool:
    if Path("/proc").is_dir():
        st = _stat(pid)
        return st is not None and (start is None or st[2] == start)
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st:
                children.setdefault(st[1], []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    for _ in range(3):  # twice more for processes started while killing
        for p in [pid, *descendants(pid)]:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _die_with_parent() -> None:
    """In the child: SIGKILL when the wrapper dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# ---- last good outputs ----
HASH_BELOW = 256 * 2**20  # inputs up to this size are keyed by content, larger ones by size and mtime


def _file_signature(f: Path) -> list:
    st = f.stat()
    if st.st_size <= HASH_BELOW:
        return [st.st_size, hashlib.sha256(f.read_bytes()).hexdigest()]
    return [st.st_size, st.st_mtime_ns]


def _signature(path: str):
    p = Path(path)
    if p.is_dir():
        return [[str(f.relative_to(p)), *_file_signature(f)] for f in sorted(p.rglob("*"))
                if f.is_file() and "checkpoints" not in f.relative_to(p).parts]
    return _file_signature(p) if p.exists() else None


def code_digest() -> str:
    h = hashlib.sha256()
    roots = [Path(__file__).resolve().parent, Path("scripts")]
    for root in roots:
        for f in sorted(root.rglob("*")) if root.is_dir() else []:
            if f.is_file() and f.suffix in (".py", ".yaml", ".jsonl") and "__pycache__" not in f.parts:
                h.update(str(f.name).encode() + f.read_bytes())
    return h.hexdigest()


def job_key(cmd: list[str], inputs: list[str]) -> str:
    blob = json.dumps({"cmd": cmd, "rule": os.environ.get("GLUERL_RULE", ""),
                       "inputs": {i: _signature(i) for i in sorted(set(inputs))}, "code": code_digest()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def store_dir(keep: list[str]) -> Path:
    return STORE / hashlib.sha256(json.dumps(sorted(keep)).encode()).hexdigest()[:24]


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints", ".*.tmp"))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def save(keep: list[str], key: str) -> None:
    """Copy the outputs to the store (a new copy replaces the old one only once it is complete)."""
    final = store_dir(keep)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i, path in enumerate(keep):
        if Path(path).exists():
            _copy(Path(path), tmp / str(i))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "key.json").write_text(json.dumps({"key": key, "outputs": keep}) + "\n")
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def restore(keep: list[str], key: str) -> bool:
    """Put back the outputs the last successful run with this key wrote; False if there are none."""
    d = store_dir(keep)
    try:
        saved = json.loads((d / "key.json").read_text())
    except (OSError, ValueError):
        return False
    if saved.get("key") != key or not all((d / str(i)).exists() for i in range(len(keep))):
        return False
    for i, path in enumerate(keep):
        src, dst = d / str(i), Path(path)
        if src.is_dir():
            _copy(src, dst)
        else:
            tmp = dst.with_name(f".{dst.name}.restore.tmp")
            _copy(src, tmp)
            os.replace(tmp, dst)
    return True


# ---- running ----
def run(cmd: list[str], keep: list[str], inputs: list[str]) -> int:
    owner, start = job_owner()
    key = job_key(cmd, inputs) if keep else ""
    if keep and os.environ.get("GLUERL_NO_RESTORE") != "1" and restore(keep, key):
        print(f"gluerl.job: outputs restored from the last good run with the same command, inputs and code "
              f"({store_dir(keep)}); GLUERL_NO_RESTORE=1 recomputes them", file=sys.stderr, flush=True)
        return 0
    child = subprocess.Popen(cmd, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    orphaned = threading.Event()

    def forward(sig, _frame):
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    def watch():
        while child.poll() is None:
            if not alive(owner, start):
                orphaned.set()
                kill_tree(child.pid)
                return
            time.sleep(POLL_SECONDS)

    threading.Thread(target=watch, daemon=True).start()
    code = child.wait()
    if orphaned.is_set():
        print(f"gluerl.job: the process that started this job ({owner}) is gone: job stopped, no outputs kept",
              file=sys.stderr, flush=True)
        return 1
    if code == 0 and keep:
        try:
            save(keep, key)
        except OSError as e:  # the outputs are in place; only their spare copy is missing
            print(f"gluerl.job: could not keep a copy of the outputs ({e})", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gluerl.job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="append", default=[], metavar="PATH", help="output kept as the last good one")
    p.add_argument("--inputs", nargs="*", default=[], metavar="PATH", help="the job's inputs (part of its key)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command after --")
    sys.exit(run(cmd, args.keep, args.inputs))


if __name__ == "__main__":
    main()
