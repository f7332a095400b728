-- wrk script: POST /v1/jobs with a JSON body and the API key from PELLETSEG_API_KEY.
-- Used by benchmarks/api_load.py; every request creates one job (no idempotency key).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PELLETSEG_API_KEY")
wrk.body = '{"source_url": "s3://bench/pellet.tif", "labels": {"bench": "wrk"}}'
