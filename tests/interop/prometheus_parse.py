"""Reads a Prometheus text exposition on stdin with the reference parser (prometheus_client)
and prints every sample as JSON, so the Rust test can compare the values with what it sent.

Exits non-zero (with the parser's error) when the text does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append(
        {
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
    )
json.dump(families, sys.stdout, ensure_ascii=False)
