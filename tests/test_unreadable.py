"""Documents the model cannot read get no topic, and a broken model never answers with NaN scores."""

import pytest
import torch

from conftest import LABELS
from govtopic import TopicClassifier
from govtopic.windows import UNREADABLE_SHARE

UNREADABLE = {
    "korean": "대한민국 정부는 도시 계획 관리를 강화하기 위하여 다음과 같이 통지한다. 각 지방 자치 단체는 환경 보호 "
    "계획을 수립하여야 한다.",
    "arabic": "تعلن الحكومة عن تعزيز إدارة التخطيط الحضري وحماية البيئة في جميع المحافظات اعتبارا من العام المقبل",
    "emoji": "😀 🎉 👍 🚀 🌍 ❤️ 😂 🙏 🔥 ✨ 😀😀😀 🎉🎉",
}
CHINESE = ["关于加强城市规划管理的通知。各区人民政府：为加强城市规划管理，现通知如下。", "人民法院审理刑事案件。😀"]


def test_text_the_model_cannot_read_gets_no_topic(tiny_model_dir):
    clf = TopicClassifier(tiny_model_dir)
    docs = [CHINESE[0], *UNREADABLE.values(), CHINESE[1]]
    results = clf.predict(docs, top_k=2, return_evidence=True)
    for res in results[1:-1]:
        assert res["label"] is None and res["label_l1"] is None and res["score"] is None
        assert "cannot read" in res["reason"] and res["unknown_share"] > UNREADABLE_SHARE
    for res in (results[0], results[-1]):
        assert res["label"] in LABELS and res["unknown_share"] < 0.2
    assert clf.predict(UNREADABLE["korean"])["label"] is None  # one str, one result


def test_nan_scores_are_never_returned(tiny_model_copy):
    clf = TopicClassifier(tiny_model_copy)
    with torch.no_grad():
        clf.model.classifier.weight.fill_(float("nan"))  # as if the weights broke after loading
    with pytest.raises(RuntimeError, match=f"{tiny_model_copy}.*not a number"):
        clf.predict(CHINESE)
