"""QLoRA on the CPU backend of bitsandbytes keeps its gradients after an eval pass.

Measured on CPUs with AVX512-BF16: the first no-grad forward (a probe generation, an eval
pass) repacks the 4-bit weights for a faster kernel, and training afterwards silently
loses the gradient through the frozen base. load_model turns that kernel off; this test
checks the gradients against the same model with its 4-bit weights dequantized, before
and after an eval pass. Skipped when bitsandbytes or its CPU 4-bit support is missing.
"""

from __future__ import annotations

import pytest
import torch

from studio.core.config import AdapterSection, ModelSection
from worker.recipe import load_model


def _cpu_4bit_works() -> bool:
    try:
        import bitsandbytes as bnb

        weight = torch.randn(64, 64)
        packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4")
        return bool((bnb.functional.dequantize_4bit(packed, state) - weight).abs().mean() < 0.2)
    except Exception:
        return False


pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() or not _cpu_4bit_works(), reason="needs bitsandbytes with CPU 4-bit support (and no GPU)"
)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model at width 64: bitsandbytes repacks only layers at least a 4-bit block
    (64 values) wide."""
    from transformers import AutoTokenizer

    from studio.core.demo import make_llama

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = make_llama(tokenizer, hidden=64, layers=2, heads=2, intermediate=128, max_positions=256, seed=0)
    out = tmp_path_factory.mktemp("tiny-llama-64")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _gradients(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _dequantized_twin(qmodel, model_dir):
    """The plain model with the 4-bit weights' dequantized values and the same adapters."""
    import bitsandbytes as bnb

    twin = load_model(ModelSection(base_model=str(model_dir)), AdapterSection(method="lora", dropout=0.0))
    modules = dict(twin.named_modules())
    for name, module in qmodel.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            modules[name].weight.data.copy_(weight.float())
    twin.load_state_dict({k: v for k, v in qmodel.state_dict().items() if "lora_" in k}, strict=False)
    return twin


def test_qlora_gradients_survive_an_eval_pass(model_dir):
    import bitsandbytes as bnb

    model = load_model(ModelSection(base_model=str(model_dir)), AdapterSection(method="qlora", dropout=0.0))
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(not m.support_avx512bf16_for_cpu for m in quantized)
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make every adapter pass gradient back
            torch.nn.init.normal_(param, std=0.05)
    ids = torch.randint(4, 300, (2, 24))
    batch = {"input_ids": ids, "labels": ids}

    reference = _gradients(_dequantized_twin(model, model_dir), batch)
    before = _gradients(model, batch)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # what a probe generation or eval pass does
    after = _gradients(model, batch)

    first_layer = [n for n in after if "layers.0." in n and "lora_A" in n]
    assert first_layer and all(after[n].abs().sum() > 0 for n in first_layer)
    for name in reference:
        assert torch.allclose(before[name], reference[name], rtol=1e-3, atol=1e-6), name
        assert torch.allclose(after[name], reference[name], rtol=1e-3, atol=1e-6), name


def test_without_the_fix_an_eval_pass_changes_the_gradients(model_dir):
    """The fact guarded above, on this CPU; skipped where the fast kernel does not exist."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    model = load_model(ModelSection(base_model=str(model_dir)), AdapterSection(method="qlora", dropout=0.0))
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = True
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    ids = torch.randint(4, 300, (2, 24))
    before = _gradients(model, {"input_ids": ids, "labels": ids})
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = _gradients(model, {"input_ids": ids, "labels": ids})
    assert max(float((before[n] - after[n]).abs().max()) for n in before) > 1e-4
