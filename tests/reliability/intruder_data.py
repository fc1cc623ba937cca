"""The intruder against ``ELEFAST_DATA_DIR``: a shared (``1777``) directory for the data, where the
name of the victim's data root is predictable. Rows of :func:`tests.reliability.intruder.other_user`."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Tuple

from tests.reliability.harness import Row

if TYPE_CHECKING:
    from tests.reliability.intruder import Intruder, Victim


def _setting(victim: Victim, intruder: Intruder) -> Tuple[Dict[str, str], Optional[Path]]:
    """The victim's environment with a shared ELEFAST_DATA_DIR, and its data root's (predictable) path."""
    run_base = victim.private_place()
    os.chmod(run_base, 0o711)  # as root the server user enters the run directory
    intruder.places.append(run_base)
    env = {"ELEFAST_SERVER": "local", "ELEFAST_RUN_DIR": str(run_base),
           "ELEFAST_DATA_DIR": str(intruder.shared_place())}
    found = victim.run(["-c", "from elefast.provision.local import local_layout; print(local_layout().data_root)"],
                       env)
    return env, Path(found.stdout.strip()) if found.returncode == 0 and found.stdout.strip() else None


def _begin(title: str, victim: Victim, intruder: Intruder) -> Tuple[Row, Dict[str, str], Optional[Path]]:
    """A row run once, the victim's environment and its data root (None, with the row failed, if unknown)."""
    row = Row(title)
    row.runs += 1
    env, data_root = _setting(victim, intruder)
    if data_root is None:
        row.fail("could not compute the data root's name")
    return row, env, data_root


def _run_and_clean(row: Row, victim: Victim, env: Dict[str, str], data_root: Path) -> None:
    """``server start`` must refuse, naming the data root and the intruder; nothing may stay running."""
    from tests.reliability.intruder import _refused

    _refused(row, victim.elefast(["server", "start"], env), data_root)
    if victim.elefast(["server", "status"], env).returncode == 0:
        row.leftovers += 1
        victim.elefast(["server", "stop"], env)


def symlinked_data_root(victim: Victim, intruder: Intruder) -> Row:
    """The intruder makes the victim's data root a symbolic link to a directory of root's: the victim
    refuses it, and that directory keeps its owner, mode and (empty) content."""
    row, env, data_root = _begin("another user's symlink at the ELEFAST_DATA_DIR data root refused", victim, intruder)
    if data_root is None:
        return row
    target = Path(tempfile.mkdtemp(prefix="elefast-roots-"))
    try:
        os.chmod(target, 0o755)
        before = os.stat(target)
        planted = intruder.sh(f"ln -s {target} {data_root}")
        if planted.returncode != 0:
            row.fail(f"the intruder could not plant: {planted.stderr}")
            return row
        _run_and_clean(row, victim, env, data_root)
        after = os.stat(target)
        if (after.st_uid, after.st_gid, after.st_mode) != (before.st_uid, before.st_gid, before.st_mode):
            row.fail(f"root's directory changed: owner {after.st_uid}:{after.st_gid}, mode {oct(after.st_mode)}")
        if any(target.iterdir()):
            row.fail(f"the victim wrote into root's directory: {[p.name for p in target.iterdir()][:5]}")
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return row


def planted_postmaster_pid(victim: Victim, intruder: Intruder) -> Row:
    """The intruder makes the victim's data root first, with a ``data/postmaster.pid`` naming a process
    of its own called ``postgres-innocent``: the victim refuses the directory and signals nothing."""
    row, env, data_root = _begin("another user's postmaster.pid in ELEFAST_DATA_DIR signals nothing", victim, intruder)
    if data_root is None:
        return row
    program = data_root.parent / "postgres-innocent"  # the intruder's own program, in the shared directory
    copied = intruder.sh(f"cp {shutil.which('sleep') or '/bin/sleep'} {program}")
    innocent = intruder.start([str(program), "120"])
    planted = intruder.sh(f"mkdir -p -m 755 {data_root}/data && echo {innocent.pid} > {data_root}/data/postmaster.pid")
    time.sleep(0.2)
    if copied.returncode != 0 or planted.returncode != 0 or innocent.poll() is not None:
        row.fail(f"the intruder could not plant: {copied.stderr}{planted.stderr}")
        return row
    _run_and_clean(row, victim, env, data_root)
    if innocent.poll() is not None:
        row.fail("the victim killed the intruder's process named in postmaster.pid")
    if os.stat(data_root).st_uid != intruder.uid:
        row.fail("the victim took over the intruder's directory")
    return row
