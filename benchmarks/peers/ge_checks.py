"""The six checks of benchmarks/quality_checks.py in Great Expectations 1.x (run by that script with
the GE venv's python): prints the validation seconds, the context set-up seconds and the failing rows."""

import sys
import time

import pandas as pd

EMAIL = r"^(?:[a-z0-9._]+@[a-z0-9]+\.[a-z]{2,})$"

df = pd.read_parquet(sys.argv[1])
start = time.perf_counter()
import great_expectations as gx  # noqa: E402  (imported inside the timed set-up)
import great_expectations.expectations as gxe  # noqa: E402

context = gx.get_context(mode="ephemeral")
batch = context.data_sources.add_pandas("bench").add_dataframe_asset("t").add_batch_definition_whole_dataframe("b")
suite = context.suites.add(gx.ExpectationSuite(name="six"))
for e in [gxe.ExpectColumnValuesToNotBeNull(column="customer_id"), gxe.ExpectColumnValuesToNotBeNull(column="amount"),
          gxe.ExpectColumnValuesToBeBetween(column="amount", min_value=0, max_value=10000),
          gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL),
          gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["paid", "open", "refunded"]),
          gxe.ExpectColumnValuesToBeUnique(column="id")]:
    suite.add_expectation(e)
setup = time.perf_counter() - start
start = time.perf_counter()
result = batch.get_batch(batch_parameters={"dataframe": df}).validate(suite, result_format="SUMMARY")
seconds = time.perf_counter() - start
failed = [r.result.get("unexpected_count") for r in result.results]
print(f"{seconds:.3f} s validation (+{setup:.1f} s context set-up); unexpected counts {failed}")
