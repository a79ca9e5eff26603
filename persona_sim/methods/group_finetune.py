"""Group fine-tuning (the paper's Table 3 row): the group prototype whose k-means centre is nearest to the
global editor's edit of the device's window, sent unedited."""
from ..model.adaptation import nearest_group
from .base import Method

METHOD = Method(name="group-finetune", label="Group Fine-tuning", where="cloud", uses_groups=True,
                adapt=nearest_group)
