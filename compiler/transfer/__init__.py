"""Weights from elsewhere — another library's module, a hand-written nn.Module, a state-dict file — into
an archspec module. Names differ between libraries, so tensors are paired by structure: both sides are
walked module by module (a module's tensors are one group: a conv's weight, a batch norm's weight, bias,
running_mean, running_var and num_batches_tracked), and paired group by group, tensor by tensor, with
shapes that must agree. A `crossdepthwise` merge keeps its inflows' per-channel tensors stacked in one
module: its group may take as many consecutive source groups (one batch norm per inflow), concatenated.

All or nothing: every source tensor is checked before anything is paired (dense, real, finite, of a
floating-point type; batch counters whole numbers), every value is converted to its target's type and
shape before the first is copied, and nothing in the module changes unless every tensor found its pair.

An nn.Module source is walked in registration order, in the order its forward pass calls its modules,
and in the canonical order of its dataflow (traced with torch.fx, or recorded from one forward pass where
fx cannot trace it) matched against the target's; where the first two pair otherwise than the dataflow,
the dataflow's pairs are taken. Its modules' hyper-parameters (norm eps and momentum, convolution stride,
padding, dilation, groups, activations between modules) must be the target's, unless forced; a zero
padding module right before a convolution counts as that convolution's padding. A state dict is walked
in its order, by natural name order, and along the target's modules by its names' tree. A file is read
without unpickling anything, and within a bound given before it is opened (`open_weights`): a regular
file of at most that many bytes, a torch file's members stored uncompressed, as `torch.save` writes
them, with sizes that add up to no more.

The modules, each importing only those listed before it: `report` (the report and the error), `groups`
(tensors grouped by module), `files` (reading and writing weights files), `trace` (a module's dataflow
graph), `dataflow` (its canonical order), `plan` (pairing and all-or-nothing writing), `flows` (both
sides' dataflows, traced once), `checks` (tensor and hyper-parameter checks), `like` (a file given a
model's structure), `nametree` (a state dict laid out along the target's names), `walks` (the orders a
source is walked in) and `weights` (`transfer_weights`)."""

from .checks import check_memory, check_tensors
from .files import Source, WeightsFile, load_state_dict, open_weights, save_state_dict
from .like import like_module, load_like
from .report import Pair, TransferError, TransferReport
from .weights import transfer_weights

__all__ = ["Pair", "Source", "TransferError", "TransferReport", "WeightsFile", "check_memory", "check_tensors",
           "like_module", "load_like", "load_state_dict", "open_weights", "save_state_dict", "transfer_weights"]
