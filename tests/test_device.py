"""Device placement and mixed precision: bad values fail before any work, bf16 autocast
reaches the Kronecker fast paths with fp32 gradients and fp32 losses, and (marked ``gpu``,
skipped without CUDA) the same checks on a GPU."""

import copy

import pytest
import torch
import yaml

import kbert.device as D
from kbert.cli import main as cli_main
from kbert.config import ConfigError, load_config
from kbert.device import Runtime, resolve_device, resolve_precision
from kbert.kernels.linear import kron_heads, kron_linear
from kbert.layers.kronecker import KroneckerLinear, kron_sum
from kbert.losses import distillation_loss
from kbert.training import TrainSettings, train
from helpers import ALL_LOSSES, GOLDEN_LOSSES, REPO, TOY_SETTINGS, tiny_batch, tiny_pair, toy_problem

CPU = torch.device("cpu")
BF16 = Runtime(CPU, "bf16")  # built directly: the numerics are the same whether the CPU has native bf16 or not
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ---- bad values: clear errors naming the value and what is allowed

@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(spec):
    with pytest.raises(ValueError, match=rf"device '{spec}': no CUDA GPU.*use device: cpu"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["tpu", "cpu:1", "gpu0"])
def test_unknown_device_names_the_allowed_values(spec):
    with pytest.raises(ValueError, match=rf"device '{spec}' is not allowed; use auto \| cpu \| cuda \| cuda:N"):
        resolve_device(spec)


def test_auto_device_is_cuda_when_present():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_precision_errors(monkeypatch):
    monkeypatch.setattr(D, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="precision 'bf16': cpu has no native bf16.*use precision: fp32"):
        resolve_precision("bf16", CPU)
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match=r"precision 'half' is not allowed; use one of \['fp32', 'bf16'"):
        resolve_precision("half", CPU)
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(D, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16" == resolve_precision("bf16", CPU)


def test_config_rejects_bad_device_and_precision():
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    config = load_config(raw)
    assert (config["device"], config["precision"]) == ("auto", "fp32")
    for key, value in (("device", "gpu"), ("precision", "fp8")):
        with pytest.raises(ConfigError, match=f"config.{key}: '{value}'"):
            load_config({**raw, key: value})


@no_cuda
def test_cli_rejects_cuda_before_any_work(tmp_path, capsys):
    code = cli_main(["finetune-teacher", "--config", str(REPO / "config" / "smoke.yaml"), "--task", "mrpc",
                     "--out", str(tmp_path / "t"), "--device", "cuda"])
    assert code == 2
    assert "device 'cuda': no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


# ---- bf16 autocast through the Kronecker fast paths

@pytest.mark.parametrize("out_f,in_f,a_shape", [(64, 64, (32, 32)), (256, 64, (8, 2)), (64, 256, (2, 16)), (64, 64, (32, 8))])
def test_kronecker_layer_under_bf16_autocast(out_f, in_f, a_shape):
    """Every plan: bf16 output close to the fp32 reference, fp32 gradients on the fp32 factors."""
    torch.manual_seed(0)
    layer = KroneckerLinear(in_f, out_f, a_shape)
    x = torch.randn(3, 16, in_f)
    reference = x @ kron_sum(layer.A, layer.B).T + layer.bias
    with BF16.autocast():
        y = layer(x)
    assert y.dtype == torch.bfloat16
    scale = reference.abs().max()
    assert (y.float() - reference).abs().max() / scale < 3e-2
    y.float().pow(2).sum().backward()
    assert layer.A.grad.dtype == torch.float32 and layer.B.grad.dtype == torch.float32
    ref_layer = KroneckerLinear(in_f, out_f, a_shape)
    ref_layer.load_state_dict(layer.state_dict())
    ref_layer(x).pow(2).sum().backward()
    for got, want in ((layer.A.grad, ref_layer.A.grad), (layer.B.grad, ref_layer.B.grad)):
        assert (got - want).abs().max() / want.abs().max() < 5e-2


def test_fused_qkv_under_bf16_autocast():
    torch.manual_seed(0)
    layers = [KroneckerLinear(64, 64, (32, 32)) for _ in range(3)]
    x = torch.randn(2, 16, 64)
    with torch.no_grad():
        want = torch.stack([layer(x).view(2, 16, 4, 16).transpose(1, 2) for layer in layers])
        with BF16.autocast():
            got = kron_heads(x, layers, 4)
    assert got is not None and got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() / want.abs().max() < 3e-2


def test_losses_are_fp32_under_autocast():
    teacher, student = tiny_pair()
    batch = tiny_batch()
    with BF16.autocast():
        total, terms = distillation_loss(student(**batch), teacher(**batch), batch["attention_mask"], ALL_LOSSES,
                                         "classification")
    assert total.dtype == torch.float32
    assert terms == pytest.approx(GOLDEN_LOSSES, rel=0.1, abs=1e-3)


def test_training_loop_learns_in_bf16(tmp_path):
    model, batches, step_loss = toy_problem()
    log = train(model, batches, step_loss, TrainSettings(**TOY_SETTINGS), tmp_path, runtime=BF16)
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_kron_linear_allocates_on_the_input_device():
    """The torch contractions (the path every non-CPU device takes) allocate like their input: meta here."""
    for a_shape, b_shape in (((32, 32), (2, 2)), ((8, 2), (32, 32)), ((2, 16), (32, 16)), ((32, 8), (2, 8))):
        A = torch.empty(1, *a_shape, device="meta")
        B = torch.empty(1, *b_shape, device="meta")
        x = torch.empty(5, a_shape[1] * b_shape[1], device="meta")
        assert kron_linear(x, A, B, torch.empty(a_shape[0] * b_shape[0], device="meta")).device.type == "meta"


# ---- the same on a GPU (skipped without one)

@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("plan", ["b_planar", "b_mid", "a_mid", "a_planar"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_kronecker_forward_backward_on_cuda(plan, precision):
    shapes = {"b_planar": (64, 64, (32, 32)), "b_mid": (256, 64, (8, 2)), "a_mid": (64, 256, (2, 16)),
              "a_planar": (64, 64, (32, 8))}
    out_f, in_f, a_shape = shapes[plan]
    torch.manual_seed(0)
    cpu_layer = KroneckerLinear(in_f, out_f, a_shape)
    cuda_layer = copy.deepcopy(cpu_layer).cuda()
    x = torch.randn(4, 8, in_f)
    cpu_layer(x).pow(2).sum().backward()
    with Runtime(torch.device("cuda"), precision).autocast():
        y = cuda_layer(x.cuda())
    y.float().pow(2).sum().backward()
    tol = 2e-5 if precision == "fp32" else 5e-2
    for name in ("A", "B", "bias"):
        want, got = getattr(cpu_layer, name).grad, getattr(cuda_layer, name).grad.cpu()
        assert (got - want).abs().max() / want.abs().max() < tol, name


@pytest.mark.gpu
@needs_cuda
def test_golden_losses_on_cuda():
    teacher, student = tiny_pair()
    teacher, student = teacher.cuda(), student.cuda()
    batch = {k: v.cuda() for k, v in tiny_batch().items()}
    _, terms = distillation_loss(student(**batch), teacher(**batch), batch["attention_mask"], ALL_LOSSES, "classification")
    assert terms == pytest.approx(GOLDEN_LOSSES, rel=1e-3, abs=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_smoke_teacher_stage_on_cuda(tmp_path):
    from kbert.stages import finetune_teacher

    config = load_config(yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()))
    config.update(device="cuda", precision="auto")
    metrics = finetune_teacher.run(config, "mrpc", str(tmp_path / "teacher"))
    assert metrics["results"][0]["score"] is not None
