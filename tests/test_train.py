"""goingdeeper.train: schedules, the loop and its hooks, histories, checkpoints and resume; the instructor's
command line (instructor.train_full); DDP.

The package has no training pieces of its own (they are notebook 05's exercises): the loop runs here on the
course's references (autograder/reference/degradation.py), as the instructor's command does. Everything runs on
the CPU with one thread on tiny synthetic data (ResNet-8, a few hundred images).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from goingdeeper import cifar, train
from goingdeeper.grading import load_reference
from instructor.scratch import ROOT
from instructor import train_full
from tiny_cifar import write_folder


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_data(n_train: int = 320, n_test: int = 100, seed: int = 0) -> cifar.CIFAR10:
    """A learnable 10-class problem in CIFAR's format: a colour pattern per class plus noise, uint8."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, 3, 4, 4, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3) * 200

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        x = templates[y] + torch.rand(n, 3, 32, 32, generator=g) * 55
        return x.to(torch.uint8), y

    return cifar.CIFAR10(*split(n_train), *split(n_test))


REF = load_reference("degradation")


def fit(config: train.Config, data: cifar.CIFAR10, **kw) -> train.History:
    """train.fit with the reference's hooks for what ``kw`` does not give."""
    return train.fit(config, data, **{**REF.hooks(config), **kw})


def tiny_config(**kw) -> train.Config:
    settings = dict(model="resnet8", epochs=2, batch_size=32, lr=0.05, schedule="constant", eval_images=50)
    settings.update(kw)
    return train.Config(**settings)


# -- schedules ------------------------------------------------------------------------------------
def test_step_schedule_divides_by_ten_at_the_papers_milestones():
    for step_lr in (REF.step_lr, REF.lr_at):  # the instructor's run's and the notebook's answer
        lr = [step_lr(i, 64000, 0.1) for i in (0, 31999, 32000, 47999, 48000, 63999)]
        assert lr == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
        short = [step_lr(i, 640, 0.1) for i in (319, 320, 479, 480)]
        assert short == pytest.approx([0.1, 0.01, 0.01, 0.001])  # the same fractions of a shorter run
        assert step_lr(0, 64000, 0.1, warmup=True) == pytest.approx(0.01)


def test_the_package_has_no_training_pieces_and_fit_says_which_it_needs():
    for name in ("train_step", "evaluate", "step_lr", "main"):
        assert not hasattr(train, name), name
    assert not hasattr(cifar, "augment") and train.SCHEDULES["step"] is None
    data = tiny_data(64, 20)
    with pytest.raises(train.HookMissing, match=r"fit needs your train_step, evaluate \(pass train_step=train_step, "
                                                r"evaluate=evaluate\)"):
        train.fit(tiny_config(epochs=1, augment=False), data, progress=False)
    config = tiny_config(epochs=1, schedule="step", augment=True, grad_norms_at=(0,))
    with pytest.raises(train.HookMissing) as err:
        train.fit(config, data, train_step=REF.train_step, evaluate=REF.evaluate, progress=False)
    assert "fit needs your augment, lr_at, grad_norms" in str(err.value)
    assert "grad_norms=conv_grad_norms" in str(err.value)  # notebook 05's name for it
    assert "step schedule is notebook 05's lr_at" in str(err.value) and "Config.augment is on" in str(err.value)


@pytest.mark.parametrize("total", [10, 97, 640])
def test_onecycle_and_cosine_match_torchs_schedulers(total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=total, cycle_momentum=False)
    ours = []
    for i in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(train.onecycle_lr(i, total, 0.4), rel=1e-9, abs=1e-12)
        ours.append(train.onecycle_lr(i, total, 0.4))
        opt.step()
        sched.step()
    assert 0.3999 < max(ours) <= 0.4
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    for i in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(train.cosine_lr(i, total, 0.1), rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()


def test_warmup_runs_at_a_tenth_until_the_cap_or_the_error_drops():
    calls = []

    def lr_at(iteration, total, base_lr, warmup):
        calls.append((iteration, warmup))
        return REF.step_lr(iteration, total, base_lr, warmup)

    data = tiny_data()
    h = fit(tiny_config(warmup=True, warmup_max_iterations=5), data, lr_at=lr_at, progress=False)
    assert [w for _, w in calls] == [True] * 5 + [False] * (len(calls) - 5)
    assert h.provenance["warmup_ended_at"] == 5 and h.records[0]["lr"] == pytest.approx(0.05)
    calls.clear()
    # An error threshold every window passes: warm-up ends as soon as the 20-step window is full.
    h = fit(tiny_config(warmup=True, warmup_error=1.01, epochs=3), data, lr_at=lr_at, progress=False)
    assert h.provenance["warmup_ended_at"] == 20 and [w for _, w in calls[:21]] == [True] * 20 + [False]


def test_presets():
    quick = [train.preset("quick", m) for m in train.PRESETS["quick"]["models"]]
    assert [c.model for c in quick] == ["plain20", "plain56", "resnet20", "resnet56"]
    full = train.preset("full", "resnet56")
    assert (full.iterations, full.batch_size, full.lr, full.schedule, full.weight_decay) == (64000, 128, 0.1, "step", 1e-4)
    assert full.n_train is None and not full.warmup and train.preset("full", "resnet110").warmup
    assert train.preset("quick", "resnet20", epochs=1).epochs == 1
    with pytest.raises(ValueError, match="quick, full"):
        train.preset("medium", "resnet20")


# -- the loop -------------------------------------------------------------------------------------
def test_a_few_epochs_reduce_the_loss_and_the_history_has_every_field():
    h = fit(tiny_config(epochs=3, grad_norms_at=(0, 7)), tiny_data(), progress=False)
    losses = h.column("train_loss")
    assert losses[-1] < losses[0] * 0.8, losses
    assert h.final["test_error"] < 0.9
    assert set(h.final) == {"epoch", "iteration", "lr", "train_loss", "train_error", "test_error", "test_images",
                            "seconds", "train_seconds"}
    assert h.column("iteration") == [10, 20, 30] and h.column("test_images") == [50, 50, 100]
    assert [g["iteration"] for g in h.grad_norms] == [0, 7]
    norms = h.grad_norms[0]["norms"]
    assert list(norms)[:2] == ["conv1.weight", "layer1.0.conv1.weight"] and len(norms) == 7
    assert all(v > 0 for v in norms.values())


def test_iterations_stop_the_run_inside_an_epoch():
    h = fit(tiny_config(iterations=15, epochs=1), tiny_data(), progress=False)
    assert h.column("iteration") == [10, 15] and h.provenance["iterations"] == 15


def test_the_hooks_are_called_with_what_they_document():
    seen = {"augment": 0, "train_step": 0, "evaluate": [], "lr_at": 0, "on_epoch": [], "grad_norms": []}

    def augment(x, generator):
        assert x.dtype == torch.uint8 and x.shape == (32, 3, 32, 32) and isinstance(generator, torch.Generator)
        assert generator.device.type == "cpu"  # a hook of the notebook's always gets a CPU generator
        seen["augment"] += 1
        return REF.augment(x, generator)

    def train_step(model, optimizer, x, y):
        assert x.dtype == torch.float32 and x.shape == (32, 3, 32, 32) and y.dtype == torch.int64
        seen["train_step"] += 1
        optimizer.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        return loss.item(), int((logits.argmax(1) != y).sum())

    def evaluate(model, x, y, batch_size):
        assert x.dtype == torch.uint8 and not model.training
        seen["evaluate"].append(len(x))
        return REF.evaluate(model, x, y, batch_size)

    def lr_at(iteration, total, base_lr, warmup):
        assert (total, base_lr, warmup) == (20, 0.05, False)
        seen["lr_at"] += 1
        return 0.01

    def grad_norms(model):
        assert all(p.grad is not None for p in model.parameters())  # the step's gradients are still there
        seen["grad_norms"].append(seen["train_step"])
        return {"first": 1.5, "last": 2}

    h = fit(tiny_config(grad_norms_at=(0, 13)), tiny_data(), augment=augment, train_step=train_step,
                  evaluate=evaluate, lr_at=lr_at, grad_norms=grad_norms,
                  on_epoch=lambda hist: seen["on_epoch"].append(len(hist.records)), progress=False)
    assert seen == {"augment": 20, "train_step": 20, "evaluate": [50, 100], "lr_at": 20, "on_epoch": [1, 2],
                    "grad_norms": [1, 14]}
    assert h.column("lr") == [0.01, 0.01]
    assert h.grad_norms == [{"iteration": 0, "norms": {"first": 1.5, "last": 2.0}},
                            {"iteration": 13, "norms": {"first": 1.5, "last": 2.0}}]


def test_hooks_get_the_forward_in_bf16_autocast_when_amp_is_on():
    seen = {}

    def train_step(model, optimizer, x, y):
        inner = []
        handle = model.model.conv1.register_forward_hook(lambda m, i, o: inner.append(o.dtype))
        optimizer.zero_grad()
        logits = model(x)
        handle.remove()
        seen["dtypes"] = (inner[0], logits.dtype)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        return loss.item(), int((logits.argmax(1) != y).sum())

    def evaluate(model, x, y, batch_size):
        model.eval()
        seen["eval_logits"] = model(cifar.normalize(x[:4])).dtype
        return 0.5

    h = fit(tiny_config(amp=True, epochs=1), tiny_data(), train_step=train_step, evaluate=evaluate,
                  progress=False)
    assert seen == {"dtypes": (torch.bfloat16, torch.float32), "eval_logits": torch.float32}
    assert h.provenance["amp_bf16"] is True and h.final["test_error"] == 0.5


def test_a_model_passed_in_is_trained_and_threads_are_restored():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    before = net[1].weight.detach().clone()
    torch.set_num_threads(1)
    h = fit(tiny_config(threads=2, channels_last=False), tiny_data(), model=net, progress=False)
    assert not torch.equal(before, net[1].weight.detach()) and h.provenance["threads"] == 2
    assert torch.get_num_threads() == 1


def test_history_json_round_trip(tmp_path):
    h = fit(tiny_config(epochs=1), tiny_data(), progress=False)
    for key in ("device", "torch", "command", "date", "state_sha256"):
        assert h.provenance[key]
    h.save(tmp_path / "one.json")
    back = train.History.load(tmp_path / "one.json")
    assert back == train.History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.records == h.records and back.config["model"] == "resnet8" and back.model == "resnet8"
    train.save_histories([h, h], tmp_path / "two.json")
    assert len(train.load_histories(tmp_path / "two.json")) == 2
    with pytest.raises(ValueError, match="load_histories"):
        train.History.load(tmp_path / "two.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results file"):
        train.load_histories(tmp_path / "bad.json")


# -- checkpoints ----------------------------------------------------------------------------------
class Interrupted(Exception):
    pass


def _interrupt_after(epochs: int):
    def on_epoch(history):
        if len(history.records) == epochs:
            raise Interrupted()
    return on_epoch


def test_resume_continues_exactly_where_an_interrupted_run_stopped(tmp_path):
    data, config = tiny_data(), tiny_config(epochs=2, schedule="onecycle", lr=0.1)
    whole = fit(config, data, progress=False, checkpoint_dir=tmp_path / "a")
    with pytest.raises(Interrupted):
        fit(config, data, progress=False, checkpoint_dir=tmp_path / "b", on_epoch=_interrupt_after(1))
    assert torch.load(tmp_path / "b" / "resnet8.pt", weights_only=False)["epoch"] == 1
    resumed = fit(config, data, progress=False, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.provenance["resumed_from_epoch"] == 1
    assert resumed.provenance["state_sha256"] == whole.provenance["state_sha256"]  # identical weights and buffers

    def strip(records):
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]

    assert strip(resumed.records) == strip(whole.records)
    assert not [p for p in (tmp_path / "b").iterdir() if p.name != "resnet8.pt"]  # no temporary files left
    again = fit(config, data, progress=False, checkpoint_dir=tmp_path / "b", resume=True)  # already done
    assert again.records == resumed.records


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    data = tiny_data()
    fit(tiny_config(epochs=1), data, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"different run \(lr: 0.05 there, 0.1 now\).*delete the checkpoint"):
        fit(tiny_config(epochs=1, lr=0.1), data, progress=False, checkpoint_dir=tmp_path, resume=True)
    fit(tiny_config(epochs=1, threads=1), data, progress=False, checkpoint_dir=tmp_path, resume=True)


# -- command line ---------------------------------------------------------------------------------
def test_command_line_trains_saves_and_resumes(tmp_path, capsys):
    write_folder(tmp_path / "data", n_train=300, n_test=40)
    args = ["--models", "resnet8", "--data", str(tmp_path / "data"), "--epochs", "1", "--device", "cpu", "--quiet",
            "--threads", "1", "--out", str(tmp_path / "r.json"), "--checkpoint-dir", str(tmp_path / "ck")]
    assert train_full.main(args) == 0
    out = capsys.readouterr().out
    assert "resnet8: train error" in out and "wrote" in out
    (h,) = train.load_histories(tmp_path / "r.json")
    assert h.config["n_train"] == 300 and h.final["epoch"] == 1 and (tmp_path / "ck" / "resnet8.pt").is_file()
    assert train_full.main([*args, "--resume"]) == 0
    assert train.load_histories(tmp_path / "r.json")[0].records == h.records


def test_command_line_errors_say_what_to_do(tmp_path, capsys, monkeypatch):
    assert train_full.main(["--models", "resnet21"]) == 2
    assert "6n + 2" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert train_full.main(["--device", "cuda"]) == 2
        assert "--device cpu" in capsys.readouterr().err

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "_urlopen", offline)
    assert train_full.main(["--data", str(tmp_path / "nothing"), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert cifar.URL in err and str(tmp_path / "nothing") in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_with_two_cpu_processes_ends_with_identical_weights(tmp_path):
    write_folder(tmp_path / "data", n_train=300, n_test=40)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "instructor.train_full", "--models", "resnet8", "--data", str(tmp_path / "data"), "--epochs", "2",
           "--device", "cpu", "--quiet", "--threads", "1", "--out", str(tmp_path / "r.json"),
           "--checkpoint-dir", str(tmp_path / "ck")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("resnet8: train error") == 1  # only rank 0 prints
    (h,) = train.load_histories(tmp_path / "r.json")
    assert h.provenance["world_size"] == 2
    hashes = h.provenance["rank_state_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1] == h.provenance["state_sha256"]
    net = train.build("resnet8")
    net.load_state_dict(torch.load(tmp_path / "ck" / "resnet8.pt", weights_only=False)["model"])
    assert train.state_hash(net) == hashes[0]
    assert h.final["iteration"] == 4 and h.final["test_images"] == 40  # 300 // 128 = 2 steps an epoch


def test_a_saved_run_is_loaded_not_retrained_and_a_changed_piece_trains_afresh(tmp_path):
    data, config = tiny_data(), tiny_config(epochs=2)
    hooks = REF.hooks(config)
    folder = train.run_folder(tmp_path, config, data, *hooks.values())
    assert folder.parent == tmp_path and folder.name.startswith("resnet8-")
    first = fit(config, data, checkpoint_dir=folder, resume=True)
    steps = []

    def counted(model, optimizer, x, y):
        steps.append(1)
        return REF.train_step(model, optimizer, x, y)

    net = train.build("resnet8")
    again = train.fit(config, data, model=net, **{**hooks, "train_step": counted}, checkpoint_dir=folder, resume=True,
                      progress=False)
    assert steps == [] and again.records == first.records  # loaded, not trained
    assert again.provenance["resumed_from_epoch"] == 2 and train.state_hash(net) == first.provenance["state_sha256"]
    # What decides the result changes the folder; what only changes the speed does not.
    assert train.run_folder(tmp_path, tiny_config(epochs=2, threads=1), data, *hooks.values()) == folder
    assert train.run_folder(tmp_path, tiny_config(epochs=3), data, *hooks.values()) != folder
    assert train.run_folder(tmp_path, config, tiny_data(seed=1), *hooks.values()) != folder
    changed = dict(hooks, train_step=counted)
    assert train.run_folder(tmp_path, config, data, *changed.values()) != folder
    # The same pieces made again (new functools.partial objects, as in a new session) find the same folder.
    assert train.run_folder(tmp_path, config, data, *REF.hooks(config).values()) == folder


def test_runs_go_to_the_data_folder_or_the_users_cache_where_it_cannot_be_written(tmp_path, monkeypatch):
    monkeypatch.setenv(cifar.ENV_VAR, str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    assert train.runs_dir() == tmp_path / "data" / "runs"
    # A data folder where runs/ cannot be made (here a file stands in its way: unlike a read-only folder, that
    # holds for root too): the user's cache.
    (tmp_path / "data" / "runs").rmdir()
    (tmp_path / "data" / "runs").write_text("not a folder")
    assert train.runs_dir() == tmp_path / "cache" / "goingdeeper" / "runs"
    (tmp_path / "data" / "runs").unlink()
    monkeypatch.setenv("GOINGDEEPER_RUNS", str(tmp_path / "chosen"))
    assert train.runs_dir() == tmp_path / "chosen"
    monkeypatch.delenv("GOINGDEEPER_RUNS")
    if os.getuid() == 0:  # a data folder another user owns (a shared disk) is never used: its files would be unpickled
        os.chown(tmp_path / "data", 65534, -1)
        assert train.runs_dir() == tmp_path / "cache" / "goingdeeper" / "runs"


# -- notebook 05's own loop (Exercise 7) and depth_costs (Exercise 8): their checks, in the notebook's process ----
_HIDDEN_COSTS = {"resnet56": ([0.9, 0.5, 0.2], [0.9, 0.5, 0.3]), "plain56": ([0.9, 0.6, 0.5], [0.9, 0.6, 0.55]),
                 "resnet20": ([0.8, 0.4, 0.25], [0.8, 0.4, 0.3]), "preresnet20": ([0.8, 0.4, 0.1], [0.8, 0.4, 0.2]),
                 "plain20": ([0.8, 0.45, 0.35], [0.8, 0.5, 0.4])}


def _check(answer, fn):
    from goingdeeper import degradation

    if answer == "train_loop":
        degradation.check_train_loop(fn, seed=51)
        degradation.check_train_loop(fn, seed=551, n=23, epochs=3, batch_size=5, base_lr=0.3)
        degradation.check_train_loop(fn, seed=552, n=12, epochs=2, batch_size=4, base_lr=0.05)
    else:
        degradation.check_depth_costs(fn, {"plain20": ([0.62, 0.30], [0.70, 0.33]), "plain56": ([0.75, 0.45], [0.80, 0.41]),
                                           "resnet20": ([0.58, 0.25], [0.60, 0.27]), "resnet56": ([0.66, 0.29], [0.70, 0.26])},
                                      {"plain": 15.0, "residual": 4.0})
        degradation.check_depth_costs(fn, _HIDDEN_COSTS, {"plain": 15.0, "residual": -5.0})


def _versions(answer):
    import torch.nn.functional as F
    from wrong import degradation as versions

    for v in versions.WRONG + versions.WRONG_IN_PROCESS + versions.RIGHT:
        if v.answer == answer:
            ns = {"torch": torch, "F": F, "cifar": cifar}
            exec(v.source, ns)
            yield v, ns[answer]


@pytest.mark.parametrize("answer", ["train_loop", "depth_costs"])
def test_the_loop_and_depth_checks_reject_each_wrong_version_with_its_message_and_pass_the_right_ones(answer):
    """The same checks as notebook 05's test cells (visible and hidden), run in this process on the stand-ins."""
    from goingdeeper.checks import CheckFailed

    ref = load_reference("degradation")
    _check(answer, getattr(ref, answer))
    seen = 0
    for version, fn in _versions(answer):
        seen += 1
        if not hasattr(version, "feedback"):
            _check(answer, fn)
            continue
        with pytest.raises(CheckFailed) as failed:
            _check(answer, fn)
        assert version.feedback in str(failed.value), (version.mistake, str(failed.value))
    assert seen >= 6
    if answer == "train_loop":
        assert seen >= 13 + 1
