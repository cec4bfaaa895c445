"""The published JSON Schemas (draft 2020-12) of the log, the schedule and every --json output.

Generated from one definition, ``simulator.report.schema``, by ``python3 -m simulator.report.schema
--write``; ``tests/test_schema.py`` keeps these files equal to what it generates.
"""
