"""The example application's unittest suite."""
