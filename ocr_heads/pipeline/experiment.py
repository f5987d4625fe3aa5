"""The experiments' command lines (``exp_masking.py``, ``exp_sink.py``): one parser and one main for every
registered experiment, built from its declaration (:mod:`ocr_heads.experiments.base`)."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ocr_heads.core.commandline import Parser, count_help, error_line, positive_int, run_cli, setup_logging
from ocr_heads.core.errors import FailedSamplesError, UserError
from ocr_heads.core.heads import check_heads_exist
from ocr_heads.core.io import ensure_writable_dir
from ocr_heads.core.kinds import Modality
from ocr_heads.core.paths import experiment_dir, model_name
from ocr_heads.core.provenance import TOY_NOTE, model_fingerprint, model_note
from ocr_heads.core.runner import Shard
from ocr_heads.experiments.base import NONE, Experiment
from ocr_heads.experiments.data import resolve_sources
from ocr_heads.experiments.registry import get_experiment
from ocr_heads.experiments.run import TOY_COT_NOTE, RunConfig, run_one
from ocr_heads.models import load_adapter
from ocr_heads.models.options import adapter_kwargs, add_model_args, knob_names
from ocr_heads.report.reading import reading_figure
from ocr_heads.scores import default_score
from ocr_heads.scores.files import heads_file, load_scores, score_file
from ocr_heads.scores.selection import (
    HEAD_LISTS,
    choose_heads,
    load_head_ranking,
    needs_ranking,
    released_masking_ranking,
)
from ocr_heads.tasks import DEFAULT_N, all_tasks
from ocr_heads.tasks.prompting import (
    ANSWER_MARKER,
    COT,
    COT_INSTRUCTION,
    DEFAULT_MAX_NEW_TOKENS,
    DIRECT,
    MIN_COT_TOKENS,
    PROMPTS,
    RECONSTRUCTED,
)

if TYPE_CHECKING:
    from ocr_heads.models import ModelAdapter

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
OUTPUTS = """outputs (NAME = last component of --model_id, NAME-TAG with --tag;
         STEM = dataset[_task_headset_kK[_seedS]{extra}[_authors]][_cot]):
  OUT/{exp}/NAME/STEM.samples.jsonl  per-sample log (prediction, golds, scores); rerunning resumes
  OUT/{exp}/NAME/STEM.json           config, heads, metrics, n, failures, per-sample predictions
  OUT/{exp}.csv                      one row per metric: {columns}
  with --record_reading: OUT/{exp}/NAME/STEM.reading.csv (per sample, generated step and reading head) and
                         OUT/{exp}/NAME/DATASET.reading.png (direct vs cot side by side)
"""
PROMPT_HELP = f"""prompts (--prompt):
  direct  the task's own answer-format line (the paper's prompts; the default)
  cot     {RECONSTRUCTED}. The task's answer-format line is replaced by:
          "{COT_INSTRUCTION}"
          The answer is the text after the last "{ANSWER_MARKER}" / "answer is" of the output, else its last
          non-empty line (ocr_heads/tasks/prompting.py); EM/F1 score that answer, the raw output is kept beside
          it with the rule used (answer_rule) and whether decoding hit --max_new_tokens (truncated).
head lists (--selection), for the head sets drawn from a list (top k; random outside the list):
  documented  step3's head list of the documented rule (the default under every protocol)
  authors     what the released exp_masking.py picks itself from the raw score file: the zero-fraction rule
              with no minimum score (step3 --rule authors --min_score 0); --no_intersection avoids its step3
              list (min score 0.1). The released --no_intersection draw iterates a Python set, so it depends on
              PYTHONHASHSEED; the draw here is seeded (--seed) and the same on every machine.
"""


def default_heads_path(model_id: str, task: Modality) -> Path:
    """Where step3 writes the documented-rule head list of this model's default score for ``task`` (image: OCR
    heads, text: retrieval heads)."""
    return heads_file("scores", model_name(model_id), default_score(task), "documented")


def build_parser(experiment: Experiment | str) -> argparse.ArgumentParser:
    """The command line of ``exp_NAME.py``: the flags every experiment shares, then the experiment's own and
    its options'."""
    experiment = get_experiment(experiment) if isinstance(experiment, str) else experiment
    datasets, k = list(experiment.default_datasets), experiment.default_k
    extra = "".join(f"_{option.name}{option.symbol}" for option in experiment.options)
    epilog = OUTPUTS.format(exp=experiment.name, extra=extra, columns=", ".join(experiment.csv_columns))
    parser = Parser(description=textwrap.fill(experiment.description, 100),
                    epilog=epilog + experiment.epilog + "\n\n" + PROMPT_HELP,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=datasets, choices=sorted(all_tasks()), metavar="NAME",
                        help=f"datasets to evaluate: {', '.join(all_tasks())} (default: {' '.join(datasets)})")
    parser.add_argument("--task", choices=tuple(Modality), default=Modality.IMAGE.value,
                        help="whose heads: image = OCR heads (step3 *_fg list), text = retrieval heads (*_te list)")
    add_model_args(parser, DEFAULT_MODEL)
    parser.add_argument("--num_of_masking_head", type=positive_int, default=k,
                        help=f"k, the number of heads to intervene on (default {k})")
    parser.add_argument("--heads", nargs="+", default=None, metavar="[TASK=]PATH",
                        help="head list: step3 output, a plain list or a score file (default "
                        "scores/heads/MODEL_{fg|te}_documented.json by --task; with --selection authors the raw "
                        "score file scores/{image|text}/MODEL_{fg|te}.json); image=PATH text=PATH give each "
                        "task's list (--grid reads both)")
    parser.add_argument("--selection", choices=HEAD_LISTS, default=HEAD_LISTS[0],
                        help="which head list a top-k or random-outside-the-list head set reads: documented "
                        "(step3's list, the default) or authors (the released exp_masking.py's own choice from the "
                        "raw score file; see below)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random head sets (default 1234)")
    parser.add_argument("--data", nargs="+", default=None, metavar="[NAME=]PATH",
                        help="local data: NAME=PATH per dataset (passkey: a step1 output dir), or a folder laid "
                        "out like dataset/ (download.sh), or with one dataset just its path "
                        "(default: dataset/ copies, else the hub)")
    parser.add_argument("--n", type=positive_int, default=DEFAULT_N, help=count_help("per dataset", DEFAULT_N))
    parser.add_argument("--data_seed", type=int, default=0,
                        help="seed of per-example context composition (nq/hotpot distractors; default 0)")
    parser.add_argument("--prompt", nargs="+", choices=PROMPTS, default=[DIRECT], metavar="direct|cot",
                        help="how each example is asked: direct (default) or cot (chain of thought, "
                        f"{RECONSTRUCTED}); several run each in turn")
    parser.add_argument("--max_new_tokens", type=positive_int, default=None,
                        help="greedy decoding length (default "
                        + ", ".join(f"{p} {n}" for p, n in DEFAULT_MAX_NEW_TOKENS.items())
                        + f"; recorded per run; cot below {MIN_COT_TOKENS} is warned)")
    parser.add_argument("--record_reading", action="store_true",
                        help="record, per generated step, whether each reading head's argmax lies on the page / "
                        "the evidence and its attention mass there (the run's heads; for the unmodified model "
                        "the top k of the head list): STEM.reading.csv and a figure")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default results/)")
    parser.add_argument("--tag", default=None,
                        help="file the results under NAME-TAG (folder and CSV model column): keeps runs on other "
                        "data or settings apart from earlier ones in the same --out")
    parser.add_argument("--shard", default=None, help="i/n: run every n-th sample starting at i (0-based); "
                        "under `accelerate launch` each process takes its own shard and the first one merges")
    parser.add_argument("--merge", action="store_true", help="only merge existing shard logs into the results")
    parser.add_argument("--wait", action="store_true",
                        help="if another process is writing the same run, wait for it instead of refusing")
    parser.add_argument("--batch_size", type=positive_int, default=1,
                        help="samples generated together (left-padded; results equal --batch_size 1; default 1)")
    parser.add_argument("--tmp", type=int, default=1, metavar="N",
                        help="accepted for the authors' commands (their scratch folder tmpN/ for page images); "
                        "no effect here: pages are passed in memory")
    if experiment.grid:
        parser.add_argument("--grid", action="store_true",
                            help="run the crossed grid: every --prompt x head set ("
                            + ", ".join(_grid_label(head_set, task) for head_set, task in experiment.grid)
                            + ") x every --datasets, ignoring the head-set flags")
    experiment.add_flags(parser)
    for option in experiment.options:
        option.add_flag(parser)
    for choice in experiment.choices:
        choice.add_flag(parser)
    return parser


def _grid_label(head_set: str, task: str | None) -> str:
    return f"{head_set} ({task} heads)" if task else head_set


def heads_path(args: argparse.Namespace, task: Modality) -> Path:
    """The head list of ``task``: ``--heads TASK=PATH`` or a bare ``--heads PATH`` (for --task), else the
    default file of --selection."""
    bare = []
    for item in args.heads or []:
        name, sep, path = item.partition("=")
        if sep and name in tuple(Modality):
            if name == task:
                return Path(path)
        else:
            bare.append(item)
    if len(bare) > 1:
        raise UserError(f"--heads {' '.join(bare)}: give one list, or TASK=PATH per task")
    if bare and task == args.task:
        return Path(bare[0])
    if args.selection == "authors":
        return score_file("scores", model_name(args.model_id), default_score(task))
    return default_heads_path(args.model_id, task)


def head_ranking(args: argparse.Namespace, task: Modality, selection: str) -> tuple[list[str], Path]:
    """The ranked head list a head set of choose_heads rule ``selection`` draws from, and where it came from."""
    path = heads_path(args, task)
    if not path.is_file():
        raise UserError(f"no head list at {path}: run step2/step3 first or pass --heads")
    if args.selection == "authors":
        try:
            scores = load_scores(path)
        except ValueError as err:
            raise UserError(f"--selection authors needs a raw score file (per-event lists, step2's output) at "
                            f"{path}: {err}") from None
        return released_masking_ranking(scores, selection), path
    return load_head_ranking(path), path


def run_plan(experiment: Experiment, args: argparse.Namespace) -> list[tuple[str, Modality]]:
    """(head set, task) pairs to run: the grid's, or the one the flags choose."""
    if getattr(args, "grid", False):
        return [(head_set, Modality(task or args.task)) for head_set, task in experiment.grid]
    return [(experiment.head_set(args), Modality(args.task))]


def _configs(args: argparse.Namespace, experiment: Experiment, head_set: str, task: Modality, adapter: ModelAdapter,
             sources: dict[str, str | None], fingerprint: str) -> Iterator[RunConfig]:
    edit = experiment.edit(head_set)
    selection = NONE if edit is None else edit.selection
    heads_path = None
    ranking: list[str] = []
    if needs_ranking(selection) or (args.record_reading and edit is None):
        ranking, heads_path = head_ranking(args, task, "top" if edit is None else selection)
        check_heads_exist(ranking, adapter.shape.num_layers, adapter.shape.num_heads)
    k = 0 if edit is None else args.num_of_masking_head
    heads = choose_heads(selection, k, ranking, adapter.shape.num_layers, adapter.shape.num_heads, args.seed,
                         adapter.scoreable_layers)
    k = len(heads)  # what is masked: a head list shorter than --num_of_masking_head gives fewer heads
    logger.info("head set %s (%s heads, k=%d): %s", head_set, task, k, ", ".join(heads) or "none")
    reading_heads = (heads or ranking[:args.num_of_masking_head]) if args.record_reading else []
    if edit is None:
        heads_path = None  # the baseline masks nothing: the list only names its reading heads
    options = {} if edit is None else {option.name: getattr(args, option.name) for option in edit.options}
    knobs = {name: getattr(args, name) for name in knob_names() if getattr(args, name, None) is not None}
    choices = given_choices(args, experiment, edit is None)
    for prompt in args.prompt:
        max_new_tokens = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[prompt]
        for dataset in args.datasets:
            yield RunConfig(experiment.name, args.model_id, dataset, task, head_set, k, args.seed, heads,
                            str(heads_path) if heads_path else None, options, sources[dataset], args.n,
                            args.data_seed, max_new_tokens, args.tag, adapter.protocol, knobs, fingerprint,
                            choices=choices, prompt=prompt, selection=args.selection,
                            record_reading=args.record_reading, reading_heads=list(reading_heads))


def given_choices(args: argparse.Namespace, experiment: Experiment, unmodified: bool) -> dict[str, str]:
    """The experiment's choices as given; the unmodified model runs with their defaults (one baseline for all)."""
    choices = {choice.name: getattr(args, choice.name) for choice in experiment.choices}
    if unmodified:
        ignored = [f"--{choice.name} {choices[choice.name]}" for choice in experiment.choices
                   if choices[choice.name] != choice.default]
        if ignored:
            logger.warning("%s has no effect on the unmodified model (no edit): evaluating it", ", ".join(ignored))
        choices = {choice.name: choice.default for choice in experiment.choices}
    return choices


def run_main(experiment: str, argv: list[str] | None = None) -> int:
    """``exp_NAME.py``'s main: parse, then run every dataset (one ``error:`` line per failing dataset)."""
    args = build_parser(experiment).parse_args(argv)
    setup_logging()
    return run_cli(_run, get_experiment(experiment), args)


def _run(experiment: Experiment, args: argparse.Namespace) -> int:
    for option in experiment.options:
        option.check(getattr(args, option.name))
    plan = run_plan(experiment, args)
    text_only = [name for name in args.datasets if all_tasks()[name].modality != "image"]
    if args.record_reading and text_only:
        raise UserError(f"--record_reading reads where heads look on the page: {', '.join(text_only)} has no pages")
    ensure_writable_dir(args.out)
    shard = Shard.parse(args.shard)
    sources = resolve_sources(args.datasets, args.data)
    for head_set, task in plan:  # a missing or unreadable head list is refused before the model loads
        edit = experiment.edit(head_set)
        if (edit is not None and needs_ranking(edit.selection)) or (args.record_reading and edit is None):
            head_ranking(args, task, "top" if edit is None else edit.selection)
    if COT in args.prompt and args.max_new_tokens is not None and args.max_new_tokens < MIN_COT_TOKENS:
        logger.warning("--prompt cot with --max_new_tokens %d: a chain this short rarely reaches its %r line; "
                       "answers then come from the fallback rule (last non-empty line), recorded per sample as "
                       "answer_rule", args.max_new_tokens, ANSWER_MARKER)
    adapter = load_adapter(args.model_id, **adapter_kwargs(args, shard.device_map()))
    fingerprint = model_fingerprint(args.model_id)  # once: every run pins the same model
    try:
        configs = [cfg for head_set, task in plan
                   for cfg in _configs(args, experiment, head_set, task, adapter, sources, fingerprint)]
    except KeyError as err:
        raise UserError(f"unknown key {err} in the head list") from None
    note = model_note(adapter.model.config, args.model_id)
    if note:
        logger.warning("%s: %s", args.model_id, note)
    scored, errors = 0, 0
    failed: list[str] = []
    for cfg in configs:
        try:
            summary = run_one(adapter, cfg, args.out, shard, args.merge, args.batch_size, args.wait)
            # None: this shard's share is logged and the merge writes the results.
            scored += 1 if summary is None else summary["n"]
            if summary is not None and summary["n_failed"]:
                failed.append(f"{summary['n_failed']} in {cfg.dataset} (first: {summary['failed'][0]['id']})")
        except (FileNotFoundError, ValueError, KeyError, UserError) as err:
            # One dataset's problem must not stop the others; it is still reported in the one error style.
            print(f"{error_line(err)} ({experiment.name} on {cfg.dataset})", file=sys.stderr)
            errors += 1
    if errors:
        return 2
    if not scored:
        raise UserError(f"no sample was scored: every sample failed (see the per-sample logs under "
                        f"{args.out / experiment.name})")
    if args.record_reading:
        by_dataset: dict[tuple[Path, str], list[Path]] = {}
        for cfg in configs:
            folder = experiment_dir(args.out, cfg.experiment, cfg.model_label(adapter.name))
            by_dataset.setdefault((folder, cfg.dataset), []).append(folder / f"{cfg.stem}.reading.csv")
        for (folder, dataset), paths in by_dataset.items():
            caption = "; ".join([note, TOY_COT_NOTE] if note == TOY_NOTE and COT in args.prompt else [note])
            path = reading_figure([p for p in paths if p.is_file()], folder / f"{dataset}.reading.png",
                                  f"{adapter.name} on {dataset}", caption)
            logger.info("reading figure: %s", path)
    if failed:
        raise FailedSamplesError(f"samples failed: {'; '.join(failed)}; the results hold the samples that were "
                                 f"scored and the errors are in the per-sample logs under "
                                 f"{args.out / experiment.name}. Rerun the same command to retry them")
    return 0


def masking_main(argv: list[str] | None = None) -> int:
    return run_main("masking", argv)


def sink_main(argv: list[str] | None = None) -> int:
    return run_main("sink", argv)
