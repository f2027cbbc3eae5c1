"""Self-taught learning: pretext losses, views, pretraining methods, the transfer protocol and its CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_config
from transferlab.cli import main as cli
from transferlab.data import Batch
from transferlab.data.augment import Views
from transferlab.data.datasets import ArrayDataset, labels_per_class, select_classes
from transferlab.errors import CheckpointError, ConfigError, DataError
from transferlab.experiment import build, resolved_config
from transferlab.losses import kl_sparsity, nt_xent
from transferlab.methods import METHODS, InputSpec
from transferlab.models import Encoder
from transferlab.models.backbones import MLP

# --- NT-Xent ---------------------------------------------------------------------------------------


def test_nt_xent_equals_the_hand_computed_value():
    # z = [e1, e2 | e1, e2]: each anchor's positive has cosine 1, its two negatives cosine 0, so
    # every anchor's loss is -log(e^(1/τ) / (e^(1/τ) + 2)) = log(1 + 2 e^(-1/τ)).
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # scale must not matter (cosine similarity)
    assert nt_xent(z1, z2, temperature=1.0).item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    assert nt_xent(z1, z2, temperature=0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-6)


def test_nt_xent_matches_an_explicit_loop_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    tau = 0.3
    z = torch.cat([z1, z2]).numpy()
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, terms = 4, []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k != i)
        terms.append(-math.log(math.exp(z[i] @ z[j] / tau) / denominator))
    expected = sum(terms) / (2 * n)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(expected, rel=1e-5)
    assert nt_xent(z2, z1, tau).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_positives_are_the_two_views_of_one_sample():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 16, generator=g)
    z2 = z1 + 0.05 * torch.randn(8, 16, generator=g)  # view 2 of sample i is close to view 1 of sample i
    aligned = nt_xent(z1, z2, 0.5)
    shuffled = nt_xent(z1, z2[torch.roll(torch.arange(8), 1)], 0.5)  # pair i with another sample's view
    assert aligned < shuffled - 1.0


# --- sparsity penalty --------------------------------------------------------------------------------


def test_kl_sparsity_matches_its_formula():
    activations = torch.tensor([[0.1, 0.5], [0.3, 0.5]])  # mean activations ρ̂ = (0.2, 0.5)
    rho = 0.1
    expected = (rho * math.log(rho / 0.2) + (1 - rho) * math.log((1 - rho) / 0.8)
                + rho * math.log(rho / 0.5) + (1 - rho) * math.log((1 - rho) / 0.5))
    assert kl_sparsity(activations, rho).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.036690 + 0.368064, abs=1e-5)  # the two units, written out
    assert kl_sparsity(torch.full((5, 3), 0.1), 0.1).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="sparsity target"):
        kl_sparsity(activations, 1.5)


# --- views ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,channels", [("digits", 1), ("digits", 3), ("natural", 3), ("medical", 1)])
def test_views_are_random_per_sample_and_stay_normalised_images(preset, channels):
    views = Views(preset, (channels, 16, 16), (0.5,) * channels, (0.5,) * channels)
    x = torch.rand(6, channels, 16, 16) * 2 - 1
    x[1] = x[0]
    torch.manual_seed(0)
    a = views(x)
    b = views(x)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= -1 - 1e-5 and a.max() <= 1 + 1e-5  # [0,1] pixels, normalised with mean=std=0.5
    assert not torch.allclose(a, b)  # a new draw per call
    assert not torch.allclose(a[0], a[1])  # per-sample parameters: identical inputs give different views
    torch.manual_seed(0)
    assert torch.equal(views(x), a)  # reproducible from the global seed (checkpointed by the engine)


# --- pretraining methods --------------------------------------------------------------------------


def _spec(channels=1, size=8):
    return InputSpec("image", (channels, size, size), (0.5,) * channels, (0.5,) * channels)


def test_denoising_autoencoder_masks_the_requested_fraction_to_black():
    from transferlab.models.backbones import LeNet

    torch.manual_seed(0)
    method = METHODS.get("denoising_autoencoder")(Encoder(LeNet(1, 16), 16), 10, input_spec=_spec(1, 16),
                                                  noise_level=0.3)
    x = torch.full((64, 1, 16, 16), 0.7)
    corrupted = method.corrupt(x)
    masked = corrupted == -1.0  # black: (0 - 0.5) / 0.5
    assert masked.float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.equal(corrupted[~masked], x[~masked])


# --- the pretext methods' parts -------------------------------------------------------------------


def test_pretext_defaults_are_the_papers():
    ae, dae, sae, simclr = (METHODS.get(n).Config(name=n) for n in
                            ("autoencoder", "denoising_autoencoder", "sparse_autoencoder", "simclr"))
    assert (ae.noise, ae.noise_level, ae.sparsity_weight, ae.code_dim, ae.decoder_hidden) == ("none", 0.0, 0.0, 256, 512)
    assert (dae.noise, dae.noise_level) == ("mask", 0.3)                        # Vincent et al.
    assert (sae.sparsity_weight, sae.sparsity_target) == (3.0, 0.1)             # UFLDL
    assert (simclr.temperature, simclr.projection_dim, simclr.projection_hidden) == (0.5, 128, 512)
    assert simclr.augmentation == "natural" and simclr.crop_scale is None


def test_autoencoder_corrupts_only_while_training_and_reconstructs_the_clean_input():
    torch.manual_seed(0)
    method = METHODS.get("autoencoder")(Encoder(MLP(8, hidden=16), 0), 2, input_spec=InputSpec("features", (8,)),
                                        noise="gaussian", noise_level=0.5, code_dim=4, decoder_hidden=6)
    x = torch.randn(256, 8)
    noisy = method.corrupt(x)
    assert (noisy - x).std().item() == pytest.approx(0.5, rel=0.05)
    assert [type(m).__name__ for m in method.decoder] == ["Linear", "ReLU", "Linear"]
    assert [m.out_features for m in method.decoder if isinstance(m, torch.nn.Linear)] == [6, 8]
    assert method.num_classes == 2 and "black" not in method.state_dict()  # not saved: old checkpoints load
    assert method.code[0].out_features == 4
    method.eval()
    seen = []
    handle = method.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x_hat, code = method.reconstruct(x)
    method.train()
    torch.manual_seed(1)
    method.reconstruct(x)
    handle.remove()
    assert torch.equal(seen[0], x) and not torch.equal(seen[1], x)  # eval: clean input; training: corrupted
    assert x_hat.shape == x.shape and code.shape == (256, 4) and bool(((code > 0) & (code < 1)).all())
    assert METHODS.get("autoencoder")(Encoder(MLP(8, hidden=16), 0), 2, input_spec=InputSpec("features", (8,))).corrupt(x) is x


def test_masking_noise_drops_whole_pixels_of_rgb_images():
    from transferlab.models.backbones import LeNet

    torch.manual_seed(0)
    method = METHODS.get("denoising_autoencoder")(Encoder(LeNet(3, 16), 16), 10, input_spec=_spec(3, 16),
                                                  noise_level=0.3)
    corrupted = method.corrupt(torch.full((16, 3, 16, 16), 0.7))
    masked = corrupted == -1.0
    assert masked.any() and torch.equal(masked.all(dim=1), masked.any(dim=1))  # every channel of a pixel, or none


def test_masking_noise_on_feature_vectors_writes_zeros():
    torch.manual_seed(0)
    method = METHODS.get("denoising_autoencoder")(Encoder(MLP(8, hidden=16), 0), 2,
                                                  input_spec=InputSpec("features", (8,)), noise_level=0.5)
    x = torch.full((64, 8), 3.0)
    corrupted = method.corrupt(x)
    masked = corrupted != 3.0
    assert 0.3 < masked.float().mean().item() < 0.7 and bool((corrupted[masked] == 0.0).all())
    per_sample = masked.float().mean(1)
    assert bool(((per_sample > 0) & (per_sample < 1)).any())  # entries are dropped, not whole samples


def test_autoencoder_loss_is_half_the_squared_error_per_sample_plus_the_weighted_sparsity():
    class Ctx:
        def backward_and_step(self, loss, *names):
            self.loss, self.names = loss.item(), names

    for weight in (0.0, 0.5, 2.0):
        torch.manual_seed(0)
        method = METHODS.get("autoencoder")(Encoder(MLP(8, hidden=16), 0), 2, input_spec=InputSpec("features", (8,)),
                                            sparsity_weight=weight, sparsity_target=0.2)
        method.eval()  # no dropout: the test's forward equals the update's
        x = torch.randn(16, 8)
        ctx = Ctx()
        out = method.update(Batch(x), ctx)
        x_hat, code = method.reconstruct(x)
        recon = 0.5 * (x_hat - x).pow(2).sum(1).mean()
        assert out["recon_loss"].item() == pytest.approx(recon.item(), rel=1e-5) and ctx.names == ("main",)
        assert ctx.loss == pytest.approx(recon.item() + weight * kl_sparsity(code, 0.2).item(), rel=1e-5)
        assert ("sparsity" in out) is (weight > 0)


def test_autoencoder_and_simclr_need_the_right_input_spec():
    with pytest.raises(ConfigError, match="autoencoder needs the input shape"):
        METHODS.get("autoencoder")(Encoder(MLP(8, hidden=16), 0), 2)
    with pytest.raises(ConfigError, match="simclr makes image views; it needs image input \\(got features\\)"):
        METHODS.get("simclr")(Encoder(MLP(8, hidden=16), 0), 2, input_spec=InputSpec("features", (8,)))
    with pytest.raises(ConfigError, match="got no input_spec"):
        METHODS.get("simclr")(Encoder(MLP(8, hidden=16), 0), 2)


def test_simclr_contrasts_two_views_through_the_projector_at_its_temperature():
    from transferlab.models.backbones import LeNet

    class Ctx:
        def gather(self, z):
            self.gathered = getattr(self, "gathered", 0) + 1
            return z

        def backward_and_step(self, loss, *names):
            self.loss, self.names = loss, names

    torch.manual_seed(0)
    method = METHODS.get("simclr")(Encoder(LeNet(1, 16), 16), 10, input_spec=_spec(1, 16), temperature=0.3,
                                   projection_dim=7, projection_hidden=9, augmentation="digits")
    assert [type(m).__name__ for m in method.projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]  # the paper's g
    assert [m.out_features for m in method.projector if isinstance(m, torch.nn.Linear)] == [9, 7]
    assert method.num_classes == 10
    cropped = METHODS.get("simclr")(Encoder(LeNet(1, 16), 16), 10, input_spec=_spec(1, 16), crop_scale=(0.3, 0.9))
    assert cropped.views.pipeline[0]._param_generator.scale == (0.3, 0.9)  # crop_scale reaches the random crop
    x = torch.rand(8, 1, 16, 16)
    ctx = Ctx()
    torch.manual_seed(3)
    out = method.update(Batch(x), ctx)
    assert ctx.gathered == 2 and ctx.names == ("main",)
    method.eval()
    torch.manual_seed(3)  # the same two views
    x1, x2 = method.views(x), method.views(x)
    assert not torch.equal(x1, x2)
    method.train()
    z1, z2 = method.projector(method.encoder(torch.cat([x1, x2]))).chunk(2)
    assert out["nt_xent"].item() == pytest.approx(nt_xent(z1, z2, 0.3).item(), rel=1e-4)


def _pretext_losses(method_name: str, iterations: int = 40, **method):
    from transferlab.engine import Trainer

    config = tiny_config(method_name, iterations=iterations,
                         optim={"name": "adam", "lr": 0.002, "lr_schedule": "constant", "weight_decay": 0.0})
    config = config.model_copy(update={"data": config.data.model_copy(update={"target": None}),
                                       "method": {"name": method_name, **method}})
    experiment = build(config)
    trainer = Trainer(experiment.method, experiment.source, transform=experiment.transform, train=config.train,
                      optim=config.optim, batch_size=32, progress=False)
    losses = []
    original = experiment.method.update

    def recording(batch, ctx):
        out = original(batch, ctx)
        losses.append({k: v.item() for k, v in out.items()})
        return out

    experiment.method.update = recording
    trainer.fit()
    return losses


@pytest.mark.parametrize("name,key", [("autoencoder", "recon_loss"), ("denoising_autoencoder", "recon_loss"),
                                      ("sparse_autoencoder", "recon_loss"), ("simclr", "nt_xent")])
def test_a_short_pretraining_lowers_the_pretext_loss(name, key):
    if name == "simclr":  # the contrastive loss starts at ln(2N-1) and leaves that plateau slowly
        losses = [step[key] for step in _pretext_losses(name, iterations=100, augmentation="digits")]
        first, last = np.mean(losses[:5]), np.mean(losses[-5:])
        assert first == pytest.approx(math.log(2 * 32 - 1), abs=0.1) and last < first - 0.1, f"{first:.3f} -> {last:.3f}"
        return
    losses = [step[key] for step in _pretext_losses(name)]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.85 * first, f"{name}: {key} {first:.3f} -> {last:.3f}"


def test_the_sparse_autoencoder_drives_mean_activation_towards_its_target():
    steps = _pretext_losses("sparse_autoencoder", iterations=60, sparsity_target=0.1)
    assert steps[0]["mean_activation"] > 0.3  # sigmoid units start near 0.5
    assert abs(steps[-1]["mean_activation"] - 0.1) < abs(steps[0]["mean_activation"] - 0.1) / 2
    assert steps[-1]["sparsity"] < steps[0]["sparsity"] / 2


# --- the linear probe -------------------------------------------------------------------------------


def test_linear_probe_leaves_the_encoder_untouched():
    from transferlab.data import Batch

    torch.manual_seed(0)
    encoder = Encoder(MLP(8, hidden=16), bottleneck_dim=8)  # has BatchNorm: its statistics must not move either
    method = METHODS.get("linear_probe")(encoder, 2)
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    head_before = method.head.weight.clone()

    class Ctx:
        step, total_steps, progress = 0, 10, 0.0
        optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)

        def backward_and_step(self, loss, *names):
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    method.train()
    assert not method.encoder.training and method.head.training
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    for _ in range(5):
        method.update(Batch(x * 3 + 1, y), Ctx())
    after = method.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen encoder changed"
    assert not torch.equal(head_before, method.head.weight)
    assert all(not p.requires_grad for p in method.encoder.parameters())


# --- data subsets ----------------------------------------------------------------------------------


def _toy_set(n_per_class=6, classes=10):
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return ArrayDataset(torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1).expand(-1, 2, 2).contiguous(), y,
                        "toy", "train", classes)


def test_select_classes_relabels_in_the_given_order():
    subset = select_classes(_toy_set(), [7, 5])
    assert subset.num_classes == 2 and len(subset) == 12
    assert subset.y.tolist() == [1] * 6 + [0] * 6  # data order kept; classes [7, 5] -> labels 0, 1
    assert subset.x[subset.y == 0, 0, 0].tolist() == list(range(42, 48))  # label 0 = the original class-7 rows
    assert subset.x[subset.y == 1, 0, 0].tolist() == list(range(30, 36))  # label 1 = the original class-5 rows
    with pytest.raises(DataError, match="distinct labels"):
        select_classes(_toy_set(), [3, 3])


def test_select_classes_merges_label_groups_and_drops_the_rest():
    subset = select_classes(_toy_set(n_per_class=2, classes=5), [[0, 1], [3, 2]])  # label 4 dropped
    assert subset.num_classes == 2 and len(subset) == 8
    assert subset.y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert subset.x[:, 0, 0].tolist() == list(range(8))
    assert subset.classes == ["0+1", "3+2"]
    with pytest.raises(DataError, match="distinct labels"):
        select_classes(_toy_set(), [[0, 1], [1, 2]])
    with pytest.raises(DataError, match="distinct labels"):
        select_classes(_toy_set(), [[0], []])


def test_labels_per_class_draws_k_of_each_class_reproducibly():
    data = _toy_set()
    a, b, c = labels_per_class(data, 2, seed=0), labels_per_class(data, 2, seed=0), labels_per_class(data, 2, seed=1)
    assert torch.bincount(a.y, minlength=10).tolist() == [2] * 10
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    with pytest.raises(DataError, match="fewer than labels_per_class=7"):
        labels_per_class(data, 7, seed=0)


# --- pretrain -> probe / finetune / grid, end to end through the CLI ---------------------------------


def _pretrain_config(tmp_path, method="autoencoder", seed=0, iterations=6):
    cfg = {
        "seed": seed,
        "data": {"source": {"name": "digits", "part": "train"}, "image_size": 16, "channels": 3, "batch_size": 16},
        "model": {"backbone": "lenet", "bottleneck_dim": 16},
        "method": {"name": method, **({"augmentation": "digits"} if method == "simclr" else {})},
        "optim": {"name": "adam", "lr": 0.001},
        "train": {"iterations": iterations, "eval_every": 0, "checkpoint_every": 0, "log_every": 2},
        "transfer": {"train": {"name": "digits_m", "part": "train"}, "test": {"name": "digits_m", "part": "test"},
                     "iterations": 4, "batch_size": 16, "labels_per_class": [1, 3]},
    }
    path = tmp_path / f"{method}{seed}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.fixture
def pretrained(tmp_path):
    run = tmp_path / "ae0"
    assert cli(["pretrain", str(_pretrain_config(tmp_path)), "--out", str(run), "--no-progress"]) == 0
    return run


def test_encoder_init_loads_the_pretrained_encoder_and_refuses_a_mismatch(pretrained, tmp_path):
    from transferlab.engine.checkpoint import load_tensors
    from transferlab.protocol import transfer_config

    saved = {k.removeprefix("encoder."): v for k, v in load_tensors(pretrained / "model.safetensors").items()
             if k.startswith("encoder.")}
    probe = build(transfer_config(pretrained, "probe", 3))
    assert probe.method.hparams.name == "linear_probe"
    assert all(torch.equal(saved[k], v) for k, v in probe.method.encoder.state_dict().items())
    assert torch.bincount(probe.source.y).tolist() == [3] * 10
    scratch = build(transfer_config(pretrained, "scratch", "all"))
    assert scratch.method.hparams.name == "supervised" and scratch.config.model.encoder_init is None
    assert not all(torch.equal(saved[k], v) for k, v in scratch.method.encoder.state_dict().items()
                   if v.is_floating_point())
    with pytest.raises(CheckpointError, match="does not match this config's model"):
        build(transfer_config(pretrained, "finetune", 1, overrides=["model.bottleneck_dim=8"]))


def test_probe_and_finetune_commands(pretrained, capsys):
    assert cli(["probe", str(pretrained), "--labels-per-class", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["method"] == "linear_probe" and result["labels_per_class"] == 1
    # the command prints what the protocol computes for that run, k and seed (deterministic on one thread)
    from transferlab.protocol import run_transfer

    assert result["target_test/acc"] == pytest.approx(run_transfer(pretrained, "probe", labels_per_class=1, seed=0,
                                                                   progress=False)["target_test/acc"])
    assert cli(["finetune", str(pretrained), "--labels-per-class", "all", "--from-scratch", "--no-progress"]) == 0
    assert '"strategy": "scratch"' in capsys.readouterr().out


def test_grid_writes_table_plot_and_resumes(tmp_path, pretrained, capsys):
    second = tmp_path / "simclr0"
    assert cli(["pretrain", str(_pretrain_config(tmp_path, "simclr")), "--out", str(second), "--no-progress"]) == 0
    out = tmp_path / "grid"
    assert cli(["grid", str(pretrained), str(second), "--out", str(out), "--seeds", "0", "1"]) == 0
    records = json.loads((out / "results.json").read_text())
    labels = {r["method"] for r in records}
    assert labels == {"autoencoder+probe", "autoencoder+finetune", "simclr+probe", "simclr+finetune", "scratch"}
    assert {r["labels_per_class"] for r in records} == {1, 3}
    assert all(r["n_seeds"] == 2 and r["metric"] == "target_acc" and len(r["values"]) == 2 for r in records)
    for r in records:
        assert r["mean"] == pytest.approx(np.mean(r["values"])) and r["std"] == pytest.approx(np.std(r["values"], ddof=1))
    assert (out / "accuracy_vs_labels.png").stat().st_size > 10_000
    assert "| scratch |" in (out / "results.md").read_text()
    capsys.readouterr()
    assert cli(["grid", str(pretrained), str(second), "--out", str(out), "--seeds", "0", "1"]) == 0  # nothing to redo
    assert "20 cells, 20 already done, 0 to run" in capsys.readouterr().out


def test_protocol_errors_are_clear(tmp_path, pretrained, capsys):
    # a supervised method is not a pretraining method
    cfg = resolved_config(tiny_config("dann"))
    path = tmp_path / "dann.yaml"
    path.write_text(json.dumps(cfg))
    assert cli(["pretrain", str(path), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "not a pretraining method" in capsys.readouterr().err
    # a run trained without a transfer section
    raw = json.loads(_pretrain_config(tmp_path).read_text())
    del raw["transfer"]
    path.write_text(json.dumps(raw))
    assert cli(["pretrain", str(path), "--out", str(tmp_path / "no_transfer"), "--no-progress"]) == 0
    assert cli(["probe", str(tmp_path / "no_transfer"), "--labels-per-class", "1"]) == 2
    assert "without a 'transfer:' section" in capsys.readouterr().err
    # nothing to evaluate on a pretraining run; a bad k
    assert cli(["eval", str(pretrained)]) == 2
    assert "pretraining run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["probe", str(pretrained), "--labels-per-class", "0"])
    assert cli(["probe", str(tmp_path / "missing"), "--labels-per-class", "1"]) == 2
    assert "not a transferlab run" in capsys.readouterr().err
    # a domain adaptation method without a target
    with pytest.raises(ConfigError, match="set data.target"):
        build(tiny_config("dann").model_copy(update={"data": tiny_config("dann").data.model_copy(update={"target": None})}))


def test_pretraining_runs_under_bf16_autocast():
    from transferlab.engine import Trainer

    config = tiny_config("simclr", iterations=3, train={"precision": "bf16"})
    config = config.model_copy(update={"data": config.data.model_copy(update={"target": None})})
    experiment = build(config)
    before = [p.clone() for p in experiment.method.encoder.parameters()]
    result = Trainer(experiment.method, experiment.source, transform=experiment.transform, train=config.train,
                     batch_size=16, progress=False).fit()
    assert result["step"] == 3
    after = list(experiment.method.encoder.parameters())
    assert all(torch.isfinite(p).all() for p in after) and any(not torch.equal(a, b) for a, b in zip(before, after))


def test_the_grid_flags_negative_transfer(pretrained):
    from transferlab.protocol import grid_table, summarize_grid

    accuracies = {"scratch": [80, 82], "ae+finetune": [70, 71], "simclr+finetune": [79, 83]}
    rows = [{"label": label, "labels_per_class": 1, "seed": seed, "target_test/acc": acc, "device": "cpu"}
            for label, values in accuracies.items() for seed, acc in enumerate(values)]
    records = {r["method"]: r for r in summarize_grid(rows, [pretrained], "cmd")}
    assert records["ae+finetune"]["gain_vs_scratch"] == pytest.approx(70.5 - 81.0)
    assert records["ae+finetune"]["negative_transfer"] is True  # 10.5 below, stds 0.7 + 1.4
    assert records["simclr+finetune"]["negative_transfer"] is False  # 0 below
    assert "negative_transfer" not in records["scratch"]
    table = grid_table(list(records.values()))
    assert "70.5 ± 0.7 ↓" in table and "81.0 ± 2.8 |" in table

