"""The model arguments every command shares (model, dtype, placement, image protocol, family knobs), in one place.

A *knob* is a family's own setting of how pages become tokens (Qwen2-VL's pixel budget, InternVL's tile
count, Gemma 3's pan-and-scan). Each family declares its knobs in :mod:`ocr_heads.models.families` (a tuple of
:class:`~ocr_heads.models.families.Knob`, the adapter's ``KNOBS``); :func:`add_model_args` puts every registered
family's knobs on the command line, and :func:`adapter_kwargs` passes the ones given to the adapter, refusing a
knob the model's family does not have (one ``error:`` line, never silently ignored).

Torch-free, like the declarations it reads: building a command's parser imports no model code.
"""

from __future__ import annotations

import argparse

from ocr_heads.models import model_type, registered_families
from ocr_heads.models.families import Knob
from ocr_heads.models.protocol import DECLARED_KEY, DEFAULT_PROTOCOL, PROTOCOLS


def _add_flag(parser: argparse.ArgumentParser, knob: Knob, families: list[str]) -> None:
    where = f" ({', '.join(families)} models only)"
    if knob.type is bool:
        switch = parser.add_mutually_exclusive_group()
        switch.add_argument(f"--{knob.name}", dest=knob.name, action="store_const", const=True, default=knob.default,
                            help=f"{knob.help}{where}")
        switch.add_argument(f"--no_{knob.name}", dest=knob.name, action="store_const", const=False,
                            help=f"turn --{knob.name} off")
    else:
        parser.add_argument(f"--{knob.name}", type=knob.type, default=knob.default, help=f"{knob.help}{where}")


def family_knobs() -> dict[str, tuple[Knob, list[str]]]:
    """Knob name -> (the knob, the model types whose families declare it), in family registration order."""
    found: dict[str, tuple[Knob, list[str]]] = {}
    for kind, family in registered_families().items():
        for knob in family.knobs:
            known, kinds = found.setdefault(knob.name, (knob, []))
            if known != knob:
                raise RuntimeError(f"knob --{knob.name} is declared differently by two families")
            kinds.append(kind)
    return found


def add_model_args(parser: argparse.ArgumentParser, default_model: str | None = None) -> None:
    """``--model_id --dtype --device_map --protocol`` and every family's knobs (``--min_pixels --max_pixels
    --max_patches --pan_and_scan`` ...)."""
    if default_model is None:
        parser.add_argument("--model_id", required=True, help="hub id (e.g. Qwen/Qwen2-VL-2B-Instruct) or local dir")
    else:
        parser.add_argument("--model_id", default=default_model, help=f"hub id or local dir (default {default_model})")
    parser.add_argument("--dtype", default=None, help="torch dtype (default: auto on GPU, float32 on CPU)")
    parser.add_argument("--device_map", default=None, help='e.g. "auto" to spread a large model over GPUs')
    # Default None: the adapter then takes the checkpoint's declared protocol, else the paper's.
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None,
                        help="how pages become image tokens: paper = the authors' settings (Qwen2-VL min = max = "
                        "256*28*28 pixels; InternVL one 448 px tile, no thumbnail); native = the checkpoint's own "
                        f"preprocessor config (default: the protocol the checkpoint's config.json declares as "
                        f"{DECLARED_KEY}, else {DEFAULT_PROTOCOL})")
    for knob, kinds in family_knobs().values():
        _add_flag(parser, knob, kinds)


def knob_names() -> list[str]:
    return list(family_knobs())


def adapter_kwargs(args: argparse.Namespace, device_map: str | None = None) -> dict:
    """``load_adapter`` keyword arguments from parsed :func:`add_model_args` options.

    ``device_map`` is the fallback placement (e.g. a shard's device) when ``--device_map`` is not given.
    A knob given for a model whose family does not declare it is a ValueError.
    """
    import torch  # here, not at the top: building a parser stays torch-free

    if args.dtype is not None and not isinstance(getattr(torch, args.dtype, None), torch.dtype):
        raise ValueError(f"--dtype {args.dtype!r} is not a torch dtype (e.g. float32, bfloat16)")
    kwargs = {"dtype": getattr(torch, args.dtype) if args.dtype else None,
              "device_map": args.device_map or device_map, "protocol": args.protocol}
    knobs = family_knobs()
    given = {name: getattr(args, name) for name in knobs if getattr(args, name, None) is not None}
    for name, value in given.items():
        knobs[name][0].check(value, prefix="--")
    if given:
        _check_family(args.model_id, given, knobs)
    return {**kwargs, **given}


def _check_family(model_id: str, given: dict, knobs: dict[str, tuple[Knob, list[str]]]) -> None:
    kind = model_type(model_id)
    for name in given:
        if kind not in knobs[name][1]:
            own = [f"--{other}" for other, (_, kinds) in knobs.items() if kind in kinds]
            raise ValueError(f"--{name} is not a setting of {kind or 'this'} models (it is one of "
                             f"{', '.join(knobs[name][1])}); {kind or 'this'} models take "
                             f"{', '.join(own) if own else 'no page settings beyond --protocol'}")
