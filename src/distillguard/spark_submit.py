"""The Python file spark-submit runs: the ``distillguard`` command line inside a Spark driver.

spark-submit takes a file, not a module (``-m`` is not possible), so this one starts the Spark
session with the submitted master and conf, then hands the arguments to the CLI::

    spark-submit --master spark://HOST:7077 "$(python -m distillguard.spark_submit)" \\
        scan --engine spark --input s3a://BUCKET/exchanges/ --out s3a://BUCKET/scan/

``python -m distillguard.spark_submit`` (outside spark-submit) prints this file's path.
The scan (store/engine.py) uses the running session, so every ``--conf`` given to spark-submit
applies to it.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from pyspark.sql import SparkSession

    from distillguard import cli

    session = SparkSession.builder.appName("distillguard").getOrCreate()
    try:
        cli.app(prog_name="distillguard", standalone_mode=True)
    finally:
        session.stop()


if __name__ == "__main__":
    # spark-submit's Python runner hands the driver's gateway to the process it starts
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        main()
    else:
        print(os.path.abspath(__file__))
        sys.exit(0)
