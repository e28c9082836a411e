"""govtopic: tag Chinese government documents with a topic from the official 主题分类 taxonomy."""

__version__ = "0.1.0"

from govtopic.config import Config, ConfigError, load_config  # noqa: E402
from govtopic.predict import TopicClassifier, predict  # noqa: E402


def train(config, overrides=None):
    """Train from a YAML path or a Config; returns the model folder. See ``govtopic.training.train``."""
    from govtopic.training import train as _train

    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    return _train(cfg)


def evaluate(model_dir, data_file, output_dir=None, **kwargs):
    """Evaluate a model folder on a data file and write reports. See ``govtopic.evaluation.evaluate``."""
    from govtopic.evaluation import evaluate as _evaluate

    return _evaluate(model_dir, data_file, output_dir, **kwargs)


__all__ = ["__version__", "Config", "ConfigError", "load_config", "predict", "TopicClassifier", "train", "evaluate"]
