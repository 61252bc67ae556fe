"""The campaign's sections on the models alone: ``cost`` (paper Tables 8-9: teacher vs student
inference at 30,000 points) and ``accelerators`` (flash-attn and spconv where installed)."""
from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.gpu_campaign.record import NUM_CLASSES, Recorder, has_module, scans

# ----------------------------------------------------------------------------------------------
# cost


def cost(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.evaluation.cost import count_flops, count_parameters, measure
    from train.models import build_model

    one = scans(size["points"], 1, 0, device)
    many = scans(size["points"], size["batch"], 1, device)
    out: dict[str, dict[str, float]] = {}
    # the student first: the deployed model's figures come back even when the time box ends early (the
    # teacher's warm-up outlasted the box on two H100 runs, docs/notes/gpu-campaign-h100.md)
    for kind in (size["student"], size["teacher"]):
        if time.monotonic() > deadline:
            rec.note(f"stopped before {kind} at the section's time box")
            break
        torch.manual_seed(0)
        model = build_model(kind, NUM_CLASSES).to(device).eval()
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            latency = measure(model, one, repeats=size["repeats"], backward=False)
            batch_run = measure(model, many, repeats=max(1, size["repeats"] // 3), backward=False)
            flops = count_flops(model, one)
        out[kind] = {
            "parameters": count_parameters(model),
            "latency_ms": 1000 * latency.forward_s,
            "fps": 1 / latency.forward_s,
            "scans_per_s_batched": size["batch"] / batch_run.forward_s,
            "peak_mb": latency.peak_memory_bytes / 2**20,
            "gflops": flops["total"] / 1e9,
        }
        rec.put("models", out)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    t, s = out.get(size["teacher"]), out.get(size["student"])
    rows = [[k, f"{v['parameters']:,}", v["gflops"], v["latency_ms"], v["fps"], v["scans_per_s_batched"], v["peak_mb"]]
            for k, v in sorted(out.items(), key=lambda item: item[0] != size["teacher"])]
    if t and s:
        rows.append(["teacher / student", f"{t['parameters'] / s['parameters']:.3g}x", t["gflops"] / s["gflops"],
                     t["latency_ms"] / s["latency_ms"], s["fps"] / t["fps"],
                     s["scans_per_s_batched"] / t["scans_per_s_batched"], t["peak_mb"] / s["peak_mb"]])
    rec.table(f"Tables 8-9: teacher vs student inference, one scan of {size['points']} points "
              f"(throughput: batches of {size['batch']})",
              ["model", "parameters", "GFLOPs", "latency (ms)", "FPS", "scans/s batched", "peak memory (MB)"], rows)
    rec.note("Paper (nuScenes, flash attention): student 1.64x faster (0.0592 s vs 0.0362 s), 16.6x fewer "
             "parameters, 2.5-4.5x less CUDA memory (Table 9). Ours: minimum over repeats, autocast on CUDA.")


# ----------------------------------------------------------------------------------------------
# accelerators


def accelerators(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.evaluation.cost import measure
    from train.models import build_model

    batch = scans(size["points"], 1, 0, device)
    cuda = device.type == "cuda"
    variants = [
        ("attention", "sdpa", {"attn_backend": "sdpa"}, None),
        ("attention", "flash-attn", {"attn_backend": "flash"},
         None if cuda and has_module("flash_attn") else "needs CUDA and the flash_attn package"),
        ("sparse conv", "ours (PyTorch)", {"conv_backend": "torch"}, None),
        ("sparse conv", "spconv", {"conv_backend": "spconv"},
         None if cuda and has_module("spconv") else "needs CUDA and the spconv package"),
    ]
    rows = []
    for what, name, overrides, missing in variants:
        if missing is not None:
            rows.append([what, name, "skipped", missing])
        elif time.monotonic() > deadline:
            rows.append([what, name, "skipped", "section time box reached"])
        else:
            try:
                torch.manual_seed(0)
                model = build_model(size["kind"], NUM_CLASSES, **overrides).to(device).eval()
                with torch.autocast(device.type, enabled=cuda):
                    report = measure(model, batch, repeats=size["repeats"], backward=True)
                rows.append([what, name, f"{1000 * report.forward_s:.3g}",
                             f"fwd+bwd {1000 * report.forward_backward_s:.3g} ms"])
            except Exception as exc:  # an installed but broken accelerator is a result, not a crash
                rows.append([what, name, "error", f"{type(exc).__name__}: {exc}"[:300]])
        rec.table(f"Optional accelerators, {size['kind']} preset, one scan of {size['points']} points (ms, minimum)",
                  ["component", "backend", "forward (ms)", "detail"], rows)

