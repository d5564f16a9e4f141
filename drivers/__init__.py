"""Device capabilities (``drivers.base``), the driver registry and concrete drivers."""
