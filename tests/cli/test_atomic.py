"""``braunet._atomic``, what every command's outputs rely on: staged folders, all-or-nothing files, fsync."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from braunet import _atomic
from braunet._atomic import atomic_path, atomic_paths, stage_folder
from braunet.errors import InputError, OutputError


def test_a_staged_folder_appears_complete_on_commit(tmp_path):
    target = tmp_path / "model"
    with stage_folder(target) as stage:
        (stage.path / "weights").write_bytes(b"w")
        assert not target.exists() and stage.path.name == ".model.partial"
        assert stage.commit() == target
    assert sorted(p.name for p in target.iterdir()) == ["weights"]  # the owner note is not part of it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(OutputError, match="not an empty folder"):
        stage_folder(target)


@pytest.mark.parametrize("how", [ValueError, KeyboardInterrupt])
def test_leaving_a_staged_folder_uncommitted_removes_it(tmp_path, how):
    with pytest.raises(how), stage_folder(tmp_path / "model") as stage:
        (stage.path / "weights").write_bytes(b"half")
        raise how()
    assert list(tmp_path.iterdir()) == []
    with stage_folder(tmp_path / "model") as stage:  # and nothing blocks the next attempt
        stage.commit()


def test_an_empty_folder_is_a_valid_target_and_a_file_is_not(tmp_path):
    (tmp_path / "empty").mkdir()
    with stage_folder(tmp_path / "empty") as stage:
        (stage.path / "card.json").write_text("{}")
        stage.commit()
    assert (tmp_path / "empty" / "card.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="as a file"):
        stage_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="does not exist"):
        stage_folder(tmp_path / "no" / "model")
    with stage_folder(tmp_path / "no" / "model", parents=True) as stage:
        stage.commit()


def test_threads_racing_for_one_folder_one_wins(tmp_path):
    target, barrier = tmp_path / "model", threading.Barrier(8)
    outcomes: list[str] = []

    def claim(k: int) -> None:
        barrier.wait()
        try:
            with stage_folder(target) as stage:
                (stage.path / "who").write_text(str(k))
                barrier_done.wait()  # reason: every claim is tried while the winner still holds its own
                stage.commit()
            outcomes.append("won")
        except OutputError as error:
            outcomes.append(str(error))
            barrier_done.wait()

    barrier_done = threading.Barrier(8)
    threads = [threading.Thread(target=claim, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("won") == 1, outcomes
    assert all("another process is writing it" in o for o in outcomes if o != "won")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_processes_racing_for_one_folder_one_wins(tmp_path):
    """Two interpreters claim the same folder; the loser is refused at once, not after its work."""
    script = (
        "import sys, time\n"
        "from braunet._atomic import stage_folder\n"
        "from braunet.errors import OutputError\n"
        "try:\n"
        "    stage = stage_folder(sys.argv[1])\n"
        "except OutputError as error:\n"
        "    print('refused', error); sys.exit(2)\n"
        "with stage:\n"
        "    (stage.path / 'weights').write_text(sys.argv[2]); time.sleep(3); stage.commit()\n"
    )
    target = tmp_path / "model"
    env = {**os.environ, "PYTHONPATH": str(Path(_atomic.__file__).parents[1])}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(target), str(k)], env=env, stdout=subprocess.PIPE,
                             text=True) for k in range(2)]  # fmt: skip
    results = [(run.wait(60), run.stdout.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    assert "another process is writing it" in next(out for code, out in results if code == 2)
    winner = next(k for k, (code, _) in enumerate(results) if code == 0)
    assert (target / "weights").read_text() == str(winner)


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    staging = tmp_path / ".model.partial"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half")
    (staging / ".owner").write_text(f"{dead.pid} {_atomic.socket.gethostname()}\n")
    with stage_folder(tmp_path / "model") as stage:
        assert list(stage.path.iterdir()) == [stage.path / ".owner"]  # the dead run's half file is gone
        stage.commit()
    (tmp_path / ".other.partial").mkdir()  # no owner note: a writer that is just starting
    with pytest.raises(OutputError, match=r"remove .*\.other\.partial if none is"):
        stage_folder(tmp_path / "other")


def test_a_folder_filled_meanwhile_is_never_overwritten(tmp_path):
    target = tmp_path / "model"
    with stage_folder(target) as stage:
        (stage.path / "weights").write_text("mine")
        target.mkdir()
        (target / "weights").write_text("theirs")  # another writer that did not claim it
        with pytest.raises(OutputError, match="another process meanwhile"):
            stage.commit()
    assert (target / "weights").read_text() == "theirs" and sorted(os.listdir(tmp_path)) == ["model"]


def test_several_files_appear_together_or_not_at_all(tmp_path, monkeypatch):
    first, second = tmp_path / "labels.png", tmp_path / "conf.png"
    first.write_text("old labels")
    real_replace, calls = os.replace, []

    def failing_second_rename(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="Input/output"), atomic_paths([first, second]) as temps:
        temps[0].write_text("new labels")
        temps[1].write_text("new confidence")
    monkeypatch.undo()
    assert calls[:2] == ["labels.png", "conf.png"]
    assert first.read_text() == "old labels" and not second.exists()  # put back as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]  # no temporaries, no backup link
    with atomic_paths([first, second]) as temps:
        temps[0].write_text("new labels")
        temps[1].write_text("new confidence")
    assert first.read_text() == "new labels" and second.read_text() == "new confidence"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.png", "labels.png"]


def test_errors_in_the_block_name_the_target_not_the_temporary(tmp_path):
    target = tmp_path / "labels.nii.gz"
    with pytest.raises(InputError) as caught, atomic_paths([target]) as (tmp,):
        raise InputError(f"{tmp}: label map shape (3,) does not match")
    assert str(caught.value).startswith(f"{target}: label map") and ".labels" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_contents_are_flushed_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(f"replace {Path(b).name}") or real_replace(a, b))
    with atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"png")
    assert events[:2] == ["fsync", "replace out.png"], events
