"""A legacy app: engines built at import time from settings that name a
server and database that do not exist on the test server (nothing here knows about elefast)."""
