@echo off
rem Shell completion of `kubectl canary ...` (kubectl >= 1.26) on Windows: see kubectl_complete-canary.
kubectl-canary.exe __complete -- %*
