"""Run reports: Markdown tables and PNG plots (matplotlib, headless)."""

from vlml.report.markdown import format_number, markdown_table
from vlml.report.pseudo_quality import write_pseudo_label_report
from vlml.report.run_report import write_run_report

__all__ = ["markdown_table", "format_number", "write_pseudo_label_report", "write_run_report"]
