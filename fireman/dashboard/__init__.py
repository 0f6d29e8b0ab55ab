"""The live dashboard: a small JSON API over InfluxDB and Kafka, and one page of charts."""
