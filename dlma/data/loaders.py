"""Load prompt and preference-pair sets into one normal form.

Every loader returns a polars frame with string columns `id`, `prompt`, `category` and,
where the source has human labels, `chosen` and `rejected` (the preferred and the other
final reply). Errors name the file, the row (1-based line for JSONL/CSV) and the field.

Formats:
- table: JSONL (also .gz) / CSV / Parquet, with `data.columns` mapping our names to yours;
- hh:    HH-RLHF transcripts {chosen, rejected}; the query is the dialogue up to the last
         "\\n\\nAssistant:". Rows whose two dialogues differ before that point are skipped
         and counted;
- pku:   PKU-SafeRLHF {prompt, response_0, response_1, better_response_id, safer_response_id};
- any `datasets` hub id (when reachable or cached), then one of the above by its columns.
"""

from __future__ import annotations

import gzip
import zlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dlma.core.errors import DlmaError

log = logging.getLogger(__name__)

HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"
_TABLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet")


@dataclass
class LoadReport:
    """What loading did, for reports/prepare.json."""

    source: str
    format: str
    rows_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count


TEXT_FIELDS = ("prompt", "chosen", "rejected", "response_0", "response_1")


def _check_utf8(path: Path) -> None:
    """Name the line of the first byte that is not UTF-8 (the decoders only give an offset)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a cut file ends in EOFError
        raise DlmaError(f"{path}: cannot read the compressed file ({exc}); download it again or decompress it") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DlmaError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8"
        ) from None


def _read_jsonl(path: Path) -> list[dict]:
    _check_utf8(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DlmaError(f"{path}, line {line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise DlmaError(f"{path}, line {line_no}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def read_rows(path: Path) -> tuple[list[dict], int]:
    """Read a table file into dict rows. Returns (rows, number of the first data line)."""
    name = path.name.lower()
    if path.is_dir():
        raise DlmaError(f"data file '{path}' is a directory; give a JSONL, CSV or Parquet file in it")
    if not path.is_file():
        raise DlmaError(f"data file '{path}' does not exist")
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        rows, first_line = _read_jsonl(path), 1
    elif name.endswith(".csv"):
        _check_utf8(path)
        try:
            frame = pl.read_csv(path, infer_schema=False)
        except Exception as exc:  # noqa: BLE001 - polars raises several types here
            raise DlmaError(f"{path}: cannot read as CSV ({exc})") from exc
        rows, first_line = frame.to_dicts(), 2  # line 1 is the header
    elif name.endswith(".parquet"):
        try:
            rows, first_line = pl.read_parquet(path).to_dicts(), 0
        except Exception as exc:  # noqa: BLE001 - polars raises several types here
            raise DlmaError(f"{path}: cannot read as Parquet ({exc})") from exc
    else:
        raise DlmaError(f"data file '{path}': unknown type; use one of {', '.join(_TABLE_SUFFIXES)}")
    if not rows:
        raise DlmaError(f"data file '{path}' has no rows")
    return rows, first_line


def _where(source: str, index: int, first_line: int) -> str:
    return f"{source}, line {index + first_line}" if first_line else f"{source}, row {index}"


def _text(row: dict, column: str, where: str, *, required: bool = True, hint: str = "data.columns",
          text_only: bool = False) -> str | None:
    """The field as a string. text_only: it must be text (a number in a prompt column is a
    wrong mapping, not a prompt); ids and categories may be numbers."""
    if column not in row:
        if not required:
            return None
        raise DlmaError(
            f"{where}: no field '{column}' (fields: {', '.join(map(str, row))}); "
            f"map your column names with {hint}"
        )
    value = row[column]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[0]  # multi-turn prompt lists (MT-Bench): the first turn is the query
    if value is None or (isinstance(value, float) and value != value):
        if required:
            raise DlmaError(f"{where}: field '{column}' is empty (null/NaN)")
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or (text_only and not isinstance(value, str)):
        raise DlmaError(f"{where}: field '{column}' must be text, got {type(value).__name__} {value!r}; check {hint}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\ud800"): no UTF-8 form, every tokenizer fails on it
            raise DlmaError(f"{where}: field '{column}' holds {value[exc.start]!r} at character {exc.start}, a lone "
                            "surrogate that is not text; fix or drop the row") from None
    return str(value)


def split_hh_transcript(text: str) -> tuple[str, str]:
    """Split an HH-RLHF dialogue into (history up to the last assistant turn, final reply)."""
    cut = text.rfind(HH_ASSISTANT)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    return text[:cut], text[cut + len(HH_ASSISTANT):].strip()


def hh_query(history: str) -> str:
    """The query given to the model: the human message alone for one turn, else the dialogue."""
    history = history.strip()
    body = history[len("Human:"):].strip() if history.startswith("Human:") else history
    if HH_HUMAN.strip() not in body and HH_ASSISTANT.strip() not in body:
        return body
    return history  # multi-turn: keep the earlier turns, flattened into one string


def detect_format(columns: set[str]) -> str:
    if {"chosen", "rejected"} <= columns and "prompt" not in columns:
        return "hh"
    if {"prompt", "response_0", "response_1"} <= columns:
        return "pku"
    return "table"


@dataclass(frozen=True)
class _Source:
    """Where rows come from, for error messages: the file, its first data line, the params key that maps columns."""

    name: str
    first_line: int
    hint: str

    def where(self, index: int) -> str:
        return _where(self.name, index, self.first_line)


def _normalise_hh(rows: list[dict], src: _Source, report: LoadReport) -> list[dict]:
    out = []
    for index, row in enumerate(rows):
        where = src.where(index)
        chosen = _text(row, "chosen", where, hint=src.hint, text_only=True)
        rejected = _text(row, "rejected", where, hint=src.hint, text_only=True)
        try:
            history_c, reply_c = split_hh_transcript(chosen)
            history_r, reply_r = split_hh_transcript(rejected)
        except ValueError:
            report.skip("hh_no_assistant_turn")
            continue
        if history_c != history_r:
            report.skip("hh_dialogues_differ_before_last_turn")
            continue
        out.append(
            {"id": f"row{index}", "prompt": hh_query(history_c), "category": "hh", "chosen": reply_c, "rejected": reply_r}
        )
    return out


def _normalise_pku(rows: list[dict], src: _Source, label: str, report: LoadReport) -> list[dict]:
    key = f"{label}_response_id"
    out = []
    for index, row in enumerate(rows):
        where = src.where(index)
        prompt = _text(row, "prompt", where, hint=src.hint, text_only=True)
        responses = tuple(_text(row, f"response_{i}", where, hint=src.hint, text_only=True) for i in (0, 1))
        raw_label = _text(row, key, where, hint=src.hint)
        try:
            winner = int(float(raw_label))
        except ValueError:
            winner = -1
        if winner not in (0, 1):
            raise DlmaError(f"{where}: field '{key}' must be 0 or 1, got {raw_label!r}")
        out.append(
            {
                "id": str(row.get("id", f"row{index}")),
                "prompt": prompt,
                "category": str(row.get("category", "pku")),
                "chosen": responses[winner],
                "rejected": responses[1 - winner],
            }
        )
    return out


def _normalise_table(rows: list[dict], src: _Source, columns: dict[str, str]) -> list[dict]:
    names = {k: columns.get(k, k) for k in ("prompt", "id", "category", "chosen", "rejected")}
    has_pairs = names["chosen"] in rows[0] or "chosen" in columns
    # Ids are all or nothing: numbering only the rows without one would mix two id schemes.
    with_ids = [index for index, row in enumerate(rows) if names["id"] in row]
    has_ids = "id" in columns or bool(with_ids)
    if has_ids and len(with_ids) < len(rows):
        missing = next(index for index, row in enumerate(rows) if names["id"] not in row)
        raise DlmaError(f"{src.where(missing)}: no field '{names['id']}', while {len(with_ids)} of the {len(rows)} rows "
                        f"have one (first at {src.where(with_ids[0]).rsplit(', ', 1)[1] if with_ids else '-'}); give every "
                        "row an id, or none (rows are then numbered)")
    out, first_seen = [], {}
    for index, row in enumerate(rows):
        where = src.where(index)
        item = {
            "id": _text(row, names["id"], where, required=True, hint=src.hint) if has_ids else None,
            "prompt": _text(row, names["prompt"], where, hint=src.hint, text_only=True),
            "category": _text(row, names["category"], where, required="category" in columns, hint=src.hint) or "",
        }
        if item["id"] is None:
            item["id"] = f"row{index}"
        elif item["id"] in first_seen:
            # Ids key every row through the pipeline (and join evaluation back to prompts).
            raise DlmaError(
                f"{where}: id {item['id']!r} repeats {src.where(first_seen[item['id']]).rsplit(', ', 1)[1]}; "
                f"ids must be unique (or leave the id column out of {src.hint} to number rows)"
            )
        first_seen[item["id"]] = index
        if has_pairs:
            item["chosen"] = _text(row, names["chosen"], where, hint=src.hint, text_only=True)
            item["rejected"] = _text(row, names["rejected"], where, hint=src.hint, text_only=True)
        out.append(item)
    return out


def _hub_rows(source: str, split: str, key: str) -> list[dict]:
    from dlma.data.identity import hub_dataset

    return [dict(row) for row in hub_dataset(source, split, key)]


def load_records(
    source: str,
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    split: str = "train",
    pku_label: str = "safer",
    hint: str = "data.columns",
    source_key: str = "data.source",
) -> tuple[pl.DataFrame, LoadReport]:
    """Load any supported source into the normal form (see module docstring). `hint` names
    the params key that maps this source's columns, `source_key` the one that names the source,
    for error messages."""
    columns = columns or {}
    path = Path(source).expanduser()
    if path.exists() or source.lower().endswith(_TABLE_SUFFIXES) or source.startswith((".", "/", "~")):
        rows, first_line = read_rows(path)
        name = str(path)
    else:
        rows, first_line, name = _hub_rows(source, split, source_key), 0, f"{source}[{split}]"
        if not rows:
            raise DlmaError(f"data set '{name}' has no rows")
    fmt = detect_format(set(rows[0])) if format == "auto" else format
    report = LoadReport(source=name, format=fmt, rows_read=len(rows))
    src = _Source(name, first_line, hint)
    if fmt == "hh":
        out = _normalise_hh(rows, src, report)
    elif fmt == "pku":
        out = _normalise_pku(rows, src, pku_label, report)
    else:
        out = _normalise_table(rows, src, columns)
    if report.skipped:
        log.warning("%s: skipped %s", name, report.skipped)
    if not out:
        raise DlmaError(f"data source '{name}': no usable rows (skipped: {report.skipped})")
    schema = {k: pl.String for k in out[0]}
    return pl.DataFrame(out, schema=schema), report
