"""tf_mtml.meta: meta-learners and their fast-weight helpers."""

from tf_mtml.meta.anil import ANIL
from tf_mtml.meta.backbones import conv4, conv4_classifier, mlp_regressor
from tf_mtml.meta.black_box import BlackBoxLearner
from tf_mtml.meta.hallucination import HallucinatingProtoNet
from tf_mtml.meta.lstm_meta_optimizer import LSTMMetaOptimizer
from tf_mtml.meta.maml import MAML
from tf_mtml.meta.matching import MatchingNetwork
from tf_mtml.meta.meta_sgd import MetaSGD
from tf_mtml.meta.prototypical import PrototypicalNetwork
from tf_mtml.meta.relation import RelationNetwork
from tf_mtml.meta.reptile import Reptile
from tf_mtml.meta.siamese import SiameseNetwork

__all__ = [
    "ANIL",
    "MAML",
    "MetaSGD",
    "BlackBoxLearner",
    "conv4",
    "conv4_classifier",
    "HallucinatingProtoNet",
    "LSTMMetaOptimizer",
    "MatchingNetwork",
    "mlp_regressor",
    "PrototypicalNetwork",
    "RelationNetwork",
    "Reptile",
    "SiameseNetwork",
]
