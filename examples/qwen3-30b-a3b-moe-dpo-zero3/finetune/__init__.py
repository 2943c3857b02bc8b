"""The workspace's training library: config, data, model loading and the tiny smoke-test model."""
