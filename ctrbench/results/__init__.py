"""Run records and their summaries: ``result.json`` per job, ``summary.csv/md/tex`` per sweep."""

from __future__ import annotations

from ctrbench.results.record import read_results, write_result
from ctrbench.results.summary import SummaryRow, summarize
from ctrbench.results.tables import render, rich_table, write_tables

__all__ = ["SummaryRow", "read_results", "render", "rich_table", "summarize", "write_result", "write_tables"]
