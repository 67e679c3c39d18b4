"""A Python client for the forecast service (``forecast_client.client.ForecastClient``)."""
