# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.logger: MCT Quantizers' Logger (mct-quantizers 1.7 API) on the logger
"MCT Quantizers". error/critical/exception log and raise, as mct-quantizers 1.6 does; qi's own
classes raise ValueError themselves and never log instead of raising."""

import logging
import os
from datetime import datetime
from typing import Optional

LOGGER_NAME = "MCT Quantizers"


class Logger:
    """Static helpers over logging.getLogger("MCT Quantizers")."""

    LOG_PATH = None
    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARNING = logging.WARNING
    ERROR = logging.ERROR
    CRITICAL = logging.CRITICAL

    @staticmethod
    def get_logger() -> logging.Logger:
        return logging.getLogger(LOGGER_NAME)

    @staticmethod
    def set_logger_level(log_level: int = logging.INFO) -> None:
        Logger.get_logger().setLevel(log_level)

    @staticmethod
    def set_handler_level(log_level: int = logging.INFO) -> None:
        for handler in Logger.get_logger().handlers:
            handler.setLevel(log_level)

    @staticmethod
    def set_stream_handler() -> None:
        logger = Logger.get_logger()
        if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
            logger.addHandler(logging.StreamHandler())

    @staticmethod
    def set_log_file(log_folder: Optional[str] = None) -> None:
        """Logs to <log_folder>/mct_quantizers_log_<time>.log as well."""
        folder = log_folder or os.getcwd()
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"mct_quantizers_log_{datetime.now():%Y%m%d-%H%M%S}.log")
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - "
                                               "%(message)s"))
        Logger.get_logger().addHandler(handler)
        Logger.LOG_PATH = path

    @staticmethod
    def shutdown() -> None:
        logger = Logger.get_logger()
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)
        Logger.LOG_PATH = None

    @staticmethod
    def critical(msg: str) -> None:
        Logger.get_logger().critical(msg)
        raise Exception(msg)

    @staticmethod
    def exception(msg: str) -> None:
        Logger.get_logger().exception(msg)
        raise Exception(msg)

    @staticmethod
    def error(msg: str) -> None:
        Logger.get_logger().error(msg)
        raise Exception(msg)

    @staticmethod
    def debug(msg: str) -> None:
        Logger.get_logger().debug(msg)

    @staticmethod
    def info(msg: str) -> None:
        Logger.get_logger().info(msg)

    @staticmethod
    def warning(msg: str) -> None:
        Logger.get_logger().warning(msg)


def set_log_folder(folder: str, level: int = logging.INFO) -> None:
    """Logs at `level` to the console and to a file in `folder`."""
    Logger.set_stream_handler()
    Logger.set_log_file(folder)
    Logger.set_logger_level(level)
    Logger.set_handler_level(level)


__all__ = ["Logger", "set_log_folder"]
