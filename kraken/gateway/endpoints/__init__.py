"""The endpoints the gateway serves, each a value the lifecycle engine runs."""
