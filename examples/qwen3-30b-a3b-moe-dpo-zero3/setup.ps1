# Set up this workspace on Windows: check the machine, create .venv, install the pinned requirements (cuda).
#   powershell -ExecutionPolicy Bypass -File setup.ps1 [-Check]
param([switch]$Check)
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$missing = 0
$project = 'qwen3-30b-a3b-moe-dpo-zero3'
$model = 'Qwen/Qwen3-30B-A3B'
function Ok($text) { Write-Host "  ok       $text" }
function Lack($text) { Write-Host "  MISSING  $text"; $script:missing++ }

Write-Host "Checking this machine for $project ($model, lora on cuda):"
$python = Get-Command py -ErrorAction SilentlyContinue
if ($python) { $version = & py -3 -c "import sys; print('%d.%d' % sys.version_info[:2])" } else { $version = $null }
if ($version -and [version]$version -ge [version]"3.10") { Ok "Python $version" } else { Lack "Python 3.10 or newer (winget install Python.Python.3.11)" }
if (Get-Command git -ErrorAction SilentlyContinue) { Ok "git" } else { Lack "git (winget install Git.Git)" }
if (Get-Command nvidia-smi -ErrorAction SilentlyContinue) { Ok ("NVIDIA GPU: " + (nvidia-smi --query-gpu=name --format=csv,noheader | Select-Object -First 1)) } else { Lack "an NVIDIA GPU and driver (nvidia-smi not found)" }
$free = [math]::Floor((Get-PSDrive -Name (Get-Location).Drive.Name).Free / 1GB)
$need = 74
if ($free -ge $need) { Ok "$free GB free disk (about $need GB needed)" } else { Lack "about $need GB of free disk; $free GB free" }
if ($missing -gt 0) { Write-Host "$missing thing(s) missing."; if ($Check) { exit 1 } }
if ($Check) { Write-Host "All checks passed."; exit 0 }

if (-not (Test-Path .venv\Scripts\python.exe)) { py -3 -m venv .venv }
.venv\Scripts\python -m pip install --quiet --upgrade pip
$torch = (Select-String -Path requirements.txt -Pattern '^torch==').Line
.venv\Scripts\python -m pip install --quiet --index-url https://download.pytorch.org/whl/cu128 $torch
.venv\Scripts\python -m pip install --quiet -r requirements.txt
.venv\Scripts\python -c "import torch, transformers, peft; print('torch', torch.__version__)"
Write-Host "Ready: .venv\Scripts\activate; python smoke.py"
