"""CPU stand-in for `sglang.srt.layers.linear` (tensor-parallel size 1).

Constructors and weight loaders keep v0.5.1's signatures. As in v0.5.1 the
quantize method (``quant_config.get_quant_method(layer, prefix)``, or the
unquantized one without a config) creates the weights and applies them; the
layers return ``(output, output_bias)`` like the real ones.
"""

from typing import List, Optional, Tuple

import torch
from torch.nn.parameter import Parameter

from sglang.srt.distributed import (
    divide,
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
)
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod
from sglang.srt.utils import set_weight_attrs


class LinearBase(torch.nn.Module):
    def __init__(
        self,
        input_size: int,
        output_size: int,
        skip_bias_add: bool = False,
        params_dtype: Optional[torch.dtype] = None,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.skip_bias_add = skip_bias_add
        if params_dtype is None:
            params_dtype = torch.get_default_dtype()
        self.params_dtype = params_dtype
        self.prefix = prefix
        if quant_config is None:
            self.quant_method = UnquantizedLinearMethod()
        else:
            self.quant_method = quant_config.get_quant_method(self, prefix=prefix)

    def _create_weights(self, output_size: int, input_size: int, bias: bool):
        self.quant_method.create_weights(
            self,
            input_size,
            [output_size],
            self.input_size,
            self.output_size,
            self.params_dtype,
            weight_loader=self.weight_loader,
        )
        if bias:
            self.bias = Parameter(
                torch.empty(output_size, dtype=self.params_dtype), requires_grad=False
            )
            set_weight_attrs(
                self.bias, {"output_dim": 0, "weight_loader": self.weight_loader}
            )
        else:
            self.register_parameter("bias", None)

    @staticmethod
    def _copy_weight(param: Parameter, loaded_weight: torch.Tensor):
        # One TP rank: the whole tensor is this rank's shard.
        if len(loaded_weight.shape) == 0:
            loaded_weight = loaded_weight.reshape(1)
        assert param.size() == loaded_weight.size(), (
            param.size(),
            loaded_weight.size(),
        )
        param.data.copy_(loaded_weight)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        bias = self.bias if not self.skip_bias_add else None
        output = self.quant_method.apply(self, x, bias)
        return output, (self.bias if self.skip_bias_add else None)


class ReplicatedLinear(LinearBase):
    def __init__(
        self,
        input_size: int,
        output_size: int,
        bias: bool = True,
        skip_bias_add: bool = False,
        params_dtype: Optional[torch.dtype] = None,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ):
        super().__init__(
            input_size, output_size, skip_bias_add, params_dtype, quant_config, prefix
        )
        self._create_weights(output_size, input_size, bias)

    def weight_loader(self, param: Parameter, loaded_weight: torch.Tensor):
        self._copy_weight(param, loaded_weight)


class ColumnParallelLinear(LinearBase):
    def __init__(
        self,
        input_size: int,
        output_size: int,
        bias: bool = True,
        gather_output: bool = False,
        skip_bias_add: bool = False,
        params_dtype: Optional[torch.dtype] = None,
        quant_config: Optional[QuantizationConfig] = None,
        output_sizes: Optional[List[int]] = None,
        prefix: str = "",
        tp_rank: Optional[int] = None,
        tp_size: Optional[int] = None,
        use_presharded_weights: bool = False,
    ):
        super().__init__(
            input_size, output_size, skip_bias_add, params_dtype, quant_config, prefix
        )
        if tp_rank is None:
            tp_rank = get_tensor_model_parallel_rank()
        if tp_size is None:
            tp_size = get_tensor_model_parallel_world_size()
        assert (tp_rank, tp_size) == (0, 1), "the CPU stand-in has one TP rank"
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.gather_output = gather_output
        self.use_presharded_weights = use_presharded_weights
        self.output_size_per_partition = divide(output_size, tp_size)
        self._create_weights(self.output_size_per_partition, input_size, bias)

    def weight_loader(self, param: Parameter, loaded_weight: torch.Tensor):
        self._copy_weight(param, loaded_weight)


class QKVParallelLinear(ColumnParallelLinear):
    def __init__(
        self,
        hidden_size: int,
        head_size: int,
        total_num_heads: int,
        total_num_kv_heads: Optional[int] = None,
        bias: bool = True,
        skip_bias_add: bool = False,
        params_dtype: Optional[torch.dtype] = None,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
        tp_rank: Optional[int] = None,
        tp_size: Optional[int] = None,
        load_presharded_attn: bool = False,
    ):
        if total_num_kv_heads is None:
            total_num_kv_heads = total_num_heads
        self.hidden_size = hidden_size
        self.head_size = head_size
        self.num_heads = total_num_heads
        self.num_kv_heads = total_num_kv_heads
        self.q_proj_shard_size = self.num_heads * head_size
        self.kv_proj_shard_size = self.num_kv_heads * head_size
        super().__init__(
            input_size=hidden_size,
            output_size=(self.num_heads + 2 * self.num_kv_heads) * head_size,
            bias=bias,
            gather_output=False,
            skip_bias_add=skip_bias_add,
            params_dtype=params_dtype,
            quant_config=quant_config,
            prefix=prefix,
            tp_rank=tp_rank,
            tp_size=tp_size,
            use_presharded_weights=load_presharded_attn,
        )

    def weight_loader(
        self,
        param: Parameter,
        loaded_weight: torch.Tensor,
        loaded_shard_id: Optional[str] = None,
    ):
        if loaded_shard_id is None:  # q, k and v already fused on disk
            return self._copy_weight(param, loaded_weight)
        assert loaded_shard_id in ["q", "k", "v"]
        q, kv = self.q_proj_shard_size, self.kv_proj_shard_size
        offset, size = {"q": (0, q), "k": (q, kv), "v": (q + kv, kv)}[loaded_shard_id]
        param_data = param.data.narrow(param.output_dim, offset, size)
        assert param_data.shape == loaded_weight.shape, (
            param_data.shape,
            loaded_weight.shape,
        )
        param_data.copy_(loaded_weight)


class RowParallelLinear(LinearBase):
    def __init__(
        self,
        input_size: int,
        output_size: int,
        bias: bool = True,
        input_is_parallel: bool = True,
        skip_bias_add: bool = False,
        params_dtype: Optional[torch.dtype] = None,
        reduce_results: bool = True,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
        tp_rank: Optional[int] = None,
        tp_size: Optional[int] = None,
        use_presharded_weights: bool = False,
    ):
        super().__init__(
            input_size, output_size, skip_bias_add, params_dtype, quant_config, prefix
        )
        if tp_rank is None:
            tp_rank = get_tensor_model_parallel_rank()
        if tp_size is None:
            tp_size = get_tensor_model_parallel_world_size()
        assert (tp_rank, tp_size) == (0, 1), "the CPU stand-in has one TP rank"
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.input_is_parallel = input_is_parallel
        self.reduce_results = reduce_results
        self.use_presharded_weights = use_presharded_weights
        self.input_size_per_partition = divide(input_size, tp_size)
        self._create_weights(output_size, self.input_size_per_partition, bias)

    def weight_loader(self, param: Parameter, loaded_weight: torch.Tensor):
        self._copy_weight(param, loaded_weight)

    def forward(self, input_, skip_all_reduce=False):
        return super().forward(input_)
