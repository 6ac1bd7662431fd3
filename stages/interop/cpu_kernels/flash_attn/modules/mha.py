"""``flash_attn.modules.mha``: nanotron imports the packed varlen attention function from here."""

from flash_attn.flash_attn_interface import flash_attn_varlen_kvpacked_func

__all__ = ["flash_attn_varlen_kvpacked_func"]
