"""The model arguments every command shares (model, dtype, placement, image protocol), in one place."""

from __future__ import annotations

import argparse

import torch

from ocr_heads.models.protocol import DEFAULT_PROTOCOL, PROTOCOLS

PROCESSOR_OVERRIDES = ("min_pixels", "max_pixels", "max_patches")


def add_model_args(parser: argparse.ArgumentParser, default_model: str | None = None) -> None:
    """``--model_id --dtype --device_map --protocol --min_pixels --max_pixels --max_patches``."""
    if default_model is None:
        parser.add_argument("--model_id", required=True, help="hub id (e.g. Qwen/Qwen2-VL-2B-Instruct) or local dir")
    else:
        parser.add_argument("--model_id", default=default_model, help=f"hub id or local dir (default {default_model})")
    parser.add_argument("--dtype", default=None, help="torch dtype (default: auto on GPU, float32 on CPU)")
    parser.add_argument("--device_map", default=None, help='e.g. "auto" to spread a large model over GPUs')
    parser.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                        help="how pages become image tokens: paper = the authors' settings (Qwen2-VL min = max = "
                        "256*28*28 pixels; InternVL one 448 px tile, no thumbnail); native = the checkpoint's own "
                        f"preprocessor config (default {DEFAULT_PROTOCOL})")
    parser.add_argument("--min_pixels", type=int, default=None, help="Qwen2-VL: override the protocol's min pixels")
    parser.add_argument("--max_pixels", type=int, default=None, help="Qwen2-VL: override the protocol's max pixels")
    parser.add_argument("--max_patches", type=int, default=None,
                        help="InternVL: override the protocol's most 448 px tiles per page (a thumbnail is added "
                        "when a page gets more than one)")


def adapter_kwargs(args: argparse.Namespace, device_map: str | None = None) -> dict:
    """``load_adapter`` keyword arguments from parsed :func:`add_model_args` options.

    ``device_map`` is the fallback placement (e.g. a shard's device) when ``--device_map`` is not given.
    """
    if args.dtype is not None and not isinstance(getattr(torch, args.dtype, None), torch.dtype):
        raise ValueError(f"--dtype {args.dtype!r} is not a torch dtype (e.g. float32, bfloat16)")
    kwargs = {"dtype": getattr(torch, args.dtype) if args.dtype else None,
              "device_map": args.device_map or device_map, "protocol": args.protocol}
    for key in PROCESSOR_OVERRIDES:
        value = getattr(args, key, None)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{key} must be positive, got {value}")
            kwargs[key] = value
    return kwargs
