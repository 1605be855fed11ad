"""Energy per operation in a 45 nm process (Horowitz, ISSCC 2014), the convention of docs/energy.md:
one 32-bit float multiply-accumulate and one accumulate, in picojoules. Free of torch, so the report
can use them."""

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
