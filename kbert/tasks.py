"""Task registry: every GLUE and SQuAD task kbert runs, written as data.

One ``TaskSpec`` per task says what the text columns are, what the labels mean (in the
Hugging Face ``datasets`` order, which our models and the hub share), which metrics go
into the result columns, which of them the paper's tables show, and where the data
comes from: the hub (paper preset) or the bundled files under ``data/`` (offline preset).
Code elsewhere reads these fields; nothing branches on a task name.

Offline data is real but incomplete (``data/PROVENANCE.md``). Every offline split
therefore carries a status:

- ``full``: the official split, every row;
- ``subset``: real rows of the official split, but not all of them;
- ``derived``: the task has no offline train split, so one bundled file is cut into
  train and eval by a deterministic rule (``Derived``); scores are not comparable with
  the official dev numbers;
- ``unavailable``: no offline data at all (QQP). The task stays in the registry so
  that it is reported as missing, never silently dropped.

A task may also name out-of-distribution sets (``OodSplit``, the paper's Table 9): another
dataset its model is evaluated on, read from the hub only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("full", "subset", "derived", "unavailable")
#: SQuAD sliding-window overlap in tokens (HF run_qa default); the config's ``doc_stride``
#: defaults to the same value (workflow/schemas/config.schema.yaml).
DOC_STRIDE = 128
KINDS = ("classification", "regression", "span")


@dataclass(frozen=True)
class HubSource:
    """A dataset on the Hugging Face Hub: ``load_dataset(path, name, split=splits[ours])``."""

    path: str                       # "nyu-mll/glue"
    name: str                       # config: "mrpc", "plain_text", ...
    splits: dict[str, str]          # our split name -> hub split name
    sizes: dict[str, int]           # official row counts, for `describe_tasks` and checks


@dataclass(frozen=True)
class Derived:
    """Cut one bundled file into train and eval, by groups so no group is in both.

    Groups (a premise, a question, an article) are ranked by sha256("<task>:<key>");
    the first ``round(eval_fraction * n_groups)`` ranks are eval, the rest train. The
    ranking makes the cut exact in group counts and independent of file order.
    """

    group_by: str                   # column whose value identifies a document
    part: str                       # "train" | "eval"
    eval_fraction: float = 0.5


@dataclass(frozen=True)
class OfflineSplit:
    """The bundled files (paths relative to ``data/``) that make one split, concatenated."""

    files: tuple[str, ...]
    status: str
    columns: tuple[str, ...] | None = None   # names for a header-less TSV
    derived: Derived | None = None
    note: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        if (self.status == "unavailable") != (not self.files):
            raise ValueError("an offline split has files exactly when it is available")
        if (self.status == "derived") != (self.derived is not None):
            raise ValueError("status 'derived' and a Derived rule go together")


def unavailable(note: str) -> OfflineSplit:
    return OfflineSplit(files=(), status="unavailable", note=note)


#: How a GLUE-server file writes a prediction: the label's name (NLI tasks), its id, or a
#: float (STS-B). https://gluebenchmark.com/faq, and the files HF run_glue writes.
SERVER_FORMATS = ("name", "id", "float")


@dataclass(frozen=True)
class TestSplit:
    """A GLUE test split: its rows are predicted by the task's model and written to the
    GLUE server's file ``<server_name>.tsv`` (``index<TAB>prediction``). Test labels are
    hidden (-1 on the hub), so a test split is never scored here.

    ``hub_name`` is the hub config, usually the task's own; AX, the diagnostic set, is
    its own config ("ax"), with MNLI's columns, and is predicted by the MNLI model.
    """

    server_name: str                # "MRPC", "MNLI-m", "AX": the file name the server expects
    hub_name: str                   # nyu-mll/glue config
    hub_split: str                  # "test", "test_matched", ...
    size: int                       # official row count: a submission file must have exactly these
    offline: OfflineSplit           # the bundled file, or unavailable
    server_format: str = "id"

    def __post_init__(self):
        if self.server_format not in SERVER_FORMATS:
            raise ValueError(f"{self.server_name}: server_format {self.server_format!r} is not one of "
                             f"{SERVER_FORMATS}")


@dataclass(frozen=True)
class OodSplit:
    """An out-of-distribution set (Table 9): a hub dataset that the source task's model is
    evaluated on as one more eval split, named ``name`` in its results. No offline copy
    exists (data/PROVENANCE.md), so it is read from the hub (or a ``KBERT_HUB_DIR`` mirror).

    ``text_columns`` are the hub's columns in the order of the source task's text columns;
    ``labels`` maps each hub label name, in hub id order, to the source task's label that
    means the same (HANS "non-entailment" is RTE's "not_entailment").
    """

    name: str                       # "paws": the eval_split of its results
    label: str                      # "PAWS", as the paper prints it
    hub_path: str                   # "google-research-datasets/paws"
    hub_name: str                   # config: "labeled_final"
    hub_split: str                  # "validation"
    size: int                       # official row count
    text_columns: tuple[str, ...]
    labels: dict[str, str]
    note: str = ""                  # why this split (IMDb has no dev split)


@dataclass(frozen=True)
class TaskSpec:
    name: str                       # "mrpc", "mnli", "squad_v1", ...
    label: str                      # as the papers print it: "SST-2", "SQuAD v1.1"
    kind: str                       # "classification" | "regression" | "span"
    text_columns: tuple[str, ...]   # ("sentence1", "sentence2"); SQuAD: ("question", "context")
    label_names: tuple[str, ...]    # HF order; () for regression/span
    metrics: tuple[str, ...]        # full result-column names, e.g. ("mrpc_f1", "mrpc_acc")
    key_metrics: tuple[str, ...]    # what the paper's tables show; score = their mean
    max_seq_length: int             # 128 GLUE, 384 SQuAD
    eval_splits: tuple[str, ...]    # ("validation_matched", "validation_mismatched") for MNLI
    hub: HubSource
    offline: dict[str, OfflineSplit]    # "train" and every eval split
    version_2_with_negative: bool = False   # SQuAD v2.0: questions may have no answer
    main_label: str = ""                    # label of the first eval split (MNLI-m); default: label
    label_column: str = field(default="label")
    test_splits: tuple[TestSplit, ...] = ()  # GLUE: what the test server scores
    ood_splits: tuple[OodSplit, ...] = ()    # Table 9: out-of-distribution sets of this task's model

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")
        if not set(self.key_metrics) <= set(self.metrics):
            raise ValueError(f"{self.name}: key metrics {self.key_metrics} not in {self.metrics}")
        if set(self.offline) != {"train", *self.eval_splits}:
            raise ValueError(f"{self.name}: offline splits {sorted(self.offline)} must be "
                             f"train + {list(self.eval_splits)}")
        if set(self.hub.splits) != {"train", *self.eval_splits}:
            raise ValueError(f"{self.name}: hub splits must be train + {list(self.eval_splits)}")
        for ood in self.ood_splits:
            self._check_ood(ood)

    def _check_ood(self, ood: OodSplit) -> None:
        if ood.name in self.splits:
            raise ValueError(f"{self.name}: OOD split {ood.name!r} has the name of one of its own splits")
        if len(ood.text_columns) != len(self.text_columns):
            raise ValueError(f"{self.name}: OOD split {ood.name!r} has {len(ood.text_columns)} text columns, "
                             f"the task {len(self.text_columns)}")
        unknown = sorted(set(ood.labels.values()) - set(self.label_names))
        if unknown:
            raise ValueError(f"{self.name}: OOD split {ood.name!r} maps onto unknown labels {unknown}; "
                             f"labels: {list(self.label_names)}")

    @property
    def num_labels(self) -> int:
        """Output units of the task head: 1 for regression, 2 (start/end) for spans."""
        return {"classification": len(self.label_names), "regression": 1, "span": 2}[self.kind]

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.eval_splits)

    def available_test_splits(self, source: str) -> tuple[TestSplit, ...]:
        """The test splits ``source`` ("bundled" | "hub") has: the hub every one, the
        bundled data only MRPC's and MNLI's AX."""
        return tuple(t for t in self.test_splits if source == "hub" or t.offline.status != "unavailable")

    @property
    def available_offline(self) -> bool:
        return any(s.status != "unavailable" for s in self.offline.values())


# ---------------------------------------------------------------------------- GLUE

def _glue_hub(config: str, sizes: dict[str, int]) -> HubSource:
    return HubSource("nyu-mll/glue", config, {split: split for split in sizes}, sizes)


def _parquet(folder: str, split: str, status: str = "full") -> OfflineSplit:
    return OfflineSplit(files=(f"glue/{folder}/{split}.parquet",), status=status)


_NO_TEST = unavailable("GLUE test splits are unlabelled and not bundled (data/PROVENANCE.md)")


def _test(server_name, config, size, split="test", offline=_NO_TEST, server_format="id") -> TestSplit:
    return TestSplit(server_name, config, split, size, offline, server_format)


def _glue(name, label, text_columns, label_names, metrics, key_metrics, hub_sizes, offline,
          eval_splits=("validation",), main_label="", test_splits=(), ood_splits=()) -> TaskSpec:
    kind = "regression" if not label_names else "classification"
    return TaskSpec(
        name=name, label=label, main_label=main_label, kind=kind, text_columns=text_columns, label_names=label_names,
        metrics=tuple(f"{name}_{m}" for m in metrics),
        key_metrics=tuple(f"{name}_{m}" for m in key_metrics),
        max_seq_length=128, eval_splits=eval_splits,
        hub=_glue_hub(name, hub_sizes), offline=offline, test_splits=test_splits, ood_splits=ood_splits,
    )


GLUE = [
    _glue("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ["mcc"], ["mcc"],
          {"train": 8551, "validation": 1043},
          {"train": _parquet("CoLA", "train"), "validation": _parquet("CoLA", "validation")},
          test_splits=(_test("CoLA", "cola", 1063),)),
    _glue("sst2", "SST-2", ("sentence",), ("negative", "positive"), ["acc"], ["acc"],
          {"train": 67349, "validation": 872},
          # The official train parquet is LFS-only in the source; ALPS re-split the very
          # same 67,349 rows into two TSVs, so together they are the full train split.
          {"train": OfflineSplit(("glue/SST-2/alps_train_part.tsv", "glue/SST-2/alps_dev_part.tsv"),
                                 "full", note="ALPS train_part + dev_part = official train"),
           "validation": _parquet("SST-2", "validation")},
          test_splits=(_test("SST-2", "sst2", 1821),),
          ood_splits=(OodSplit("imdb", "IMDb", "stanfordnlp/imdb", "plain_text", "test", 25000, ("text",),
                               {"neg": "negative", "pos": "positive"},
                               note="IMDb has no dev split: its test split (docs/deviations.md)"),)),
    _glue("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
          ["f1", "acc"], ["f1", "acc"], {"train": 3668, "validation": 408},
          {"train": _parquet("MRPC", "train"), "validation": _parquet("MRPC", "validation")},
          # The one GLUE test split bundled in full (the hub's copy even carries labels).
          test_splits=(_test("MRPC", "mrpc", 1725, offline=_parquet("MRPC", "test")),),
          # PAWS label 1 = paraphrase, as MRPC's 1 = equivalent.
          ood_splits=(OodSplit("paws", "PAWS", "google-research-datasets/paws", "labeled_final", "validation", 8000,
                               ("sentence1", "sentence2"), {"0": "not_equivalent", "1": "equivalent"}),)),
    _glue("stsb", "STS-B", ("sentence1", "sentence2"), (), ["pearson", "spearman"],
          ["pearson", "spearman"], {"train": 5749, "validation": 1500},
          {"train": _parquet("STS-B", "train"), "validation": _parquet("STS-B", "validation")},
          test_splits=(_test("STS-B", "stsb", 1379, server_format="float"),)),
    _glue("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
          ["f1", "acc"], ["f1", "acc"], {"train": 363846, "validation": 40430},
          {"train": unavailable("QQP exists only as Git-LFS pointers in the source repo"),
           "validation": unavailable("QQP exists only as Git-LFS pointers in the source repo")},
          test_splits=(_test("QQP", "qqp", 390965),)),
    _glue("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
          ["acc"], ["acc"],
          {"train": 392702, "validation_matched": 9815, "validation_mismatched": 9832},
          # Only the two 1,000-example TextFooler dev subsets exist offline. Train on half
          # of the *matched* subset (split by premise, so no premise is in both halves)
          # and keep the mismatched subset whole: its genres stay unseen in training,
          # which is what "mismatched" means.
          {"train": OfflineSplit(("glue/MNLI/textfooler_matched.tsv",), "derived",
                                 columns=("label", "premise", "hypothesis"),
                                 derived=Derived("premise", "train")),
           "validation_matched": OfflineSplit(("glue/MNLI/textfooler_matched.tsv",), "derived",
                                              columns=("label", "premise", "hypothesis"),
                                              derived=Derived("premise", "eval")),
           "validation_mismatched": OfflineSplit(("glue/MNLI/textfooler_mismatched.tsv",),
                                                 "subset",
                                                 columns=("label", "premise", "hypothesis"))},
          eval_splits=("validation_matched", "validation_mismatched"), main_label="MNLI-m",
          # AX, GLUE's diagnostic set, is scored by the server from the MNLI model's predictions.
          test_splits=(_test("MNLI-m", "mnli", 9796, "test_matched", server_format="name"),
                       _test("MNLI-mm", "mnli", 9847, "test_mismatched", server_format="name"),
                       _test("AX", "ax", 1104, offline=OfflineSplit(("glue/AX/test.parquet",), "full"),
                             server_format="name"))),  # AX has MNLI's columns
    _glue("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), ["acc"], ["acc"],
          {"train": 104743, "validation": 5463},
          # Only QNLI dev exists offline: split it by question so that no question is
          # seen in training with one sentence and evaluated with another.
          {"train": OfflineSplit(("glue/QNLI/validation.parquet",), "derived",
                                 derived=Derived("question", "train")),
           "validation": OfflineSplit(("glue/QNLI/validation.parquet",), "derived",
                                      derived=Derived("question", "eval"))},
          test_splits=(_test("QNLI", "qnli", 5463, server_format="name"),)),
    _glue("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ["acc"], ["acc"],
          {"train": 2490, "validation": 277},
          {"train": _parquet("RTE", "train"), "validation": _parquet("RTE", "validation")},
          test_splits=(_test("RTE", "rte", 3000, server_format="name"),),
          ood_splits=(OodSplit("hans", "HANS", "jhu-cogsci/hans", "plain_text", "validation", 30000,
                               ("premise", "hypothesis"),
                               {"entailment": "entailment", "non-entailment": "not_entailment"}),)),
    _glue("wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ["acc"], ["acc"],
          {"train": 635, "validation": 71},
          {"train": _parquet("WNLI", "train"), "validation": _parquet("WNLI", "validation")},
          test_splits=(_test("WNLI", "wnli", 146),)),
]

# ---------------------------------------------------------------------------- SQuAD

SQUAD_V2_COLUMNS = ("em", "f1", "hasans_em", "hasans_f1", "noans_em", "noans_f1",
                    "best_em", "best_em_thresh", "best_f1", "best_f1_thresh")

SQUAD = [
    TaskSpec(
        name="squad_v1", label="SQuAD v1.1", kind="span", text_columns=("question", "context"), label_names=(),
        metrics=("squad_v1_em", "squad_v1_f1"), key_metrics=("squad_v1_em", "squad_v1_f1"),
        max_seq_length=384, eval_splits=("validation",),
        hub=HubSource("rajpurkar/squad", "plain_text",
                      {"train": "train", "validation": "validation"},
                      {"train": 87599, "validation": 10570}),
        offline={
            # The first 44 train articles (Du et al. 2017 QG split); full train is not offline.
            "train": OfflineSplit(("squad/train-v1.1.first44articles.json",), "subset",
                                  note="first 44 of 442 train articles"),
            "validation": OfflineSplit(("squad/dev-v1.1.json",), "full"),
        },
    ),
    TaskSpec(
        name="squad_v2", label="SQuAD v2.0", kind="span", text_columns=("question", "context"), label_names=(),
        metrics=tuple(f"squad_v2_{m}" for m in SQUAD_V2_COLUMNS),
        key_metrics=("squad_v2_em", "squad_v2_f1"),
        max_seq_length=384, eval_splits=("validation",),
        hub=HubSource("rajpurkar/squad_v2", "squad_v2",
                      {"train": "train", "validation": "validation"},
                      {"train": 130319, "validation": 11873}),
        offline={
            # Only half of v2.0 dev (16 articles, CS224n) has answers offline: split it by
            # article so that no paragraph is both trained on and evaluated.
            "train": OfflineSplit(("squad/dev-v2.0.cs224n-half.json",), "derived",
                                  derived=Derived("title", "train")),
            "validation": OfflineSplit(("squad/dev-v2.0.cs224n-half.json",), "derived",
                                       derived=Derived("title", "eval")),
        },
        version_2_with_negative=True,
    ),
]

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in GLUE + SQUAD}
GLUE_TASKS = tuple(spec.name for spec in GLUE)
SQUAD_TASKS = tuple(spec.name for spec in SQUAD)


#: Every OOD set by name, with the task whose model it evaluates.
OOD_SPLITS: dict[str, tuple[str, OodSplit]] = {ood.name: (spec.name, ood) for spec in TASKS.values()
                                               for ood in spec.ood_splits}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The spec of ``name`` (a spec passes through); ValueError lists the valid names."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).strip().lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[key]


def is_glue(name: str) -> bool:
    """Whether ``name`` is a GLUE task (a name outside the registry is not)."""
    return name in GLUE_TASKS


def task_label(name: str) -> str:
    """The label of a task's main (first) eval split, as one-number tables show it
    (MNLI: MNLI-m); a name outside the registry passes through."""
    spec = TASKS.get(name)
    return name if spec is None else spec.main_label or spec.label
