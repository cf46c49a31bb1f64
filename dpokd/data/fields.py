"""Which dataset column holds each record field, checked once against the columns the data has."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class FieldSpec:
    """``columns`` maps each record field onto the dataset column that holds it, as inspect_ai's
    ``FieldSpec`` does; ``options`` names the spec option that chose each column
    (``{"problem": "task.problem_column"}``), so that an error about a column says what to change.
    """

    columns: Mapping[str, str]
    options: Mapping[str, str] = field(default_factory=dict)

    def check(self, available: Sequence[str], dataset: str) -> None:
        """Fail before the first row when a mapped column is absent, listing the columns there are."""
        for name, column in self.columns.items():
            if column not in available:
                option = self.options.get(name)
                where = f"{option.partition('.')[0]}: " if option else ""
                fix = f"set {option}" if option else f"map the field {name!r} onto one of them"
                raise ConfigError(f"{where}dataset {dataset!r} has no column {column!r} "
                                  f"(columns: {', '.join(map(str, available))}); {fix}")

    def record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row's values under their field names; columns no field names are left out."""
        return {name: row[column] for name, column in self.columns.items()}

    def text(self, row: Mapping[str, Any], name: str, dataset: str, number: int) -> str:
        """The field's value as text, ``""`` where it is missing; a number or a list is an error.

        A list where text belongs means the option points at the wrong column, and would otherwise
        reach a prompt as its Python repr.
        """
        column = self.columns[name]
        value = row[column]
        if value is None:
            return ""
        if not isinstance(value, str):
            option = self.options.get(name)
            message = (f"column {column!r} of {dataset} holds {type(value).__name__} values "
                       f"(row {number}: {str(value)[:60]!r}), expected text")
            raise ConfigError(f"{option}: {message}; point {option} at the column that holds it" if option
                              else f"{message} for the field {name!r}")
        return value
