"""Group fine-tuning (the paper's Table 3 row): the group prototype, fine-tuned on its partition (the paper's
groups, whichever Persona (m) serves), whose k-means centre is nearest to the global editor's edit of the
device's window, sent unedited."""
from ..model.adaptation import nearest_tuned_group
from .base import Method

METHOD = Method(name="group-finetune", label="Group Fine-tuning", where="cloud", uses_groups=True,
                uses_tuned_groups=True, adapt=nearest_tuned_group)
