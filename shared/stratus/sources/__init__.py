"""Sources: web sites and S3 prefixes kept in sync with a collection, one sync job at a time."""
